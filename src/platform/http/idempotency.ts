import { randomBytes } from 'node:crypto';
import type { FastifyReply, FastifyRequest } from 'fastify';
import type { Database } from '../db/database.ts';
import { setUnitOfWork, type UnitOfWork } from '../db/unit-of-work.ts';
import type { Logger } from 'pino';
import { AppError, buildProblem } from './errors.ts';
import { open, requestHash, scopeOf, seal } from './idempotency-keys.ts';
import { claimKey, fenceClaim, readKey, recordResponse, recordResponseStatement, releaseKey, renewLeases, sweepIdempotencyKeys, type StoredResponse } from './idempotency.repo.ts';
import { MAX_IDEMPOTENCY_KEY_LENGTH } from './limits.ts';
import type { App } from './server.ts';

export const IDEMPOTENCY_HEADER = 'idempotency-key';
export const REPLAYED_HEADER = 'idempotent-replayed';

/** Response headers worth replaying; request-specific ones (request id, rate limits) are produced fresh. */
const STORED_HEADERS = ['content-type', 'location', 'etag', 'last-modified', 'content-location'];
const KEY_PATTERN = /^[\x20-\x7e]+$/;

declare module 'fastify' {
  interface FastifyRequest {
    /** Set while this request holds an Idempotency-Key claim (until its response is recorded). */
    idempotencyClaim?: { scopeHash: string; bodyKey: Buffer; token: string; uow: UnitOfWork };
  }
  interface FastifyInstance {
    /** The Idempotency-Key claims of this app (held, pending releases); see registerIdempotency. */
    idempotencyClaims?: IdempotencyClaims;
  }
}

export interface IdempotencyOptions {
  /** The table is global (scope hashed into the key), used with the app role. */
  database: Database;
  ttlSec: number;
  /**
   * Lease of an in-flight claim (default 5 s). The owning process renews it every `heartbeatMs` while the
   * request runs, so a slow live request keeps its key, and a claim whose owner died (or can no longer
   * reach the database) is taken over by a retry at most `leaseSec` after the last renewal.
   */
  leaseSec?: number;
  /** Renewal period of held claims (default leaseSec / 5). Failed releases are retried every ≤ 1 s. */
  heartbeatMs?: number;
  /** On close, how long to wait for requests still holding claims (default 30 s; the shutdown grace period bounds it). */
  closeWaitMs?: number;
  logger: Logger;
}

/** Handle on the claims this process holds or still has to release (tests, shutdown). */
export interface IdempotencyClaims {
  /** In-flight claims held by requests of this process. */
  held(): number;
  /** Releases/recordings that failed (database unavailable) and are being retried. */
  pending(): number;
  /** One round now: retry owed releases/records, renew held claims if a renewal is due. */
  tick(): Promise<void>;
}

/**
 * Idempotency-Key for every POST under /v1 (draft-ietf-httpapi-idempotency-key-header, Stripe semantics):
 * the first response is stored and replayed for `ttlSec`; a request with the same key while the first is
 * in flight gets 409; the same key with a different payload 422; a 5xx is not stored (retry allowed).
 * The claim is one atomic upsert on the primary key, so any number of processes agree on one winner.
 */
export function registerIdempotency(app: App, opts: IdempotencyOptions): IdempotencyClaims {
  const { ttlSec, logger } = opts;
  const scope = opts.database.scope('idempotency_keys');
  const db = scope.app;
  const leaseSec = opts.leaseSec ?? 5;
  const heartbeatMs = opts.heartbeatMs ?? Math.max(100, Math.floor((leaseSec * 1000) / 5));

  /** token → scope of every claim held by a request still running in this process (renewed by the heartbeat). */
  const held = new Map<string, string>();
  /**
   * token → what is still owed to the table for a claim whose request ended while the database was
   * unavailable: a release (5xx/aborted — the handler's transaction did not commit) or the response to
   * record. Retried every heartbeatMs until it lands; the row is only touched while it still carries the
   * token, so a claim taken over meanwhile is left alone.
   */
  const pending = new Map<string, { scopeHash: string; record?: StoredResponse }>();

  const claim = (scopeHash: string, tenantId: string | null, requestHash: string, token: string) =>
    claimKey(db, { scopeHash, tenantId, requestHash, token, leaseSec, ttlSec });
  const release = (scopeHash: string, token: string) => releaseKey(db, scopeHash, token);
  const record = (scopeHash: string, token: string, r: StoredResponse) => recordResponse(db, scopeHash, token, r);

  /** Ends a claim whose request is over: release or record now, or keep it pending if the database is down. */
  async function settle(token: string, scopeHash: string, rec?: StoredResponse): Promise<void> {
    held.delete(token);
    try {
      if (rec) {
        if (!(await record(scopeHash, token, rec))) {
          logger.error({ scopeHash }, 'idempotency: claim lost before the response was recorded (lease lapsed)');
        }
      } else {
        await release(scopeHash, token);
      }
    } catch (err) {
      pending.set(token, { scopeHash, record: rec });
      logger.warn({ err, scopeHash }, `idempotency: could not ${rec ? 'record the response' : 'release a claim'}; retrying in the background`);
    }
  }

  async function settleOwed(token: string, p: { scopeHash: string; record?: StoredResponse }): Promise<void> {
    if (p.record) await record(p.scopeHash, token, p.record);
    else await release(p.scopeHash, token);
    if (pending.delete(token)) logger.info({ scopeHash: p.scopeHash }, `idempotency: deferred ${p.record ? 'record' : 'release'} done`);
  }

  let ticking: Promise<void> | undefined;
  let lastRenewal = 0;
  async function runTick(): Promise<void> {
    // Owed releases/records first: they free keys that clients are retrying on.
    for (const [token, p] of [...pending]) {
      try {
        await settleOwed(token, p);
      } catch {
        break; // still unavailable: try again next tick
      }
    }
    if (Date.now() - lastRenewal < heartbeatMs) return;
    lastRenewal = Date.now();
    const entries = [...held];
    for (let i = 0; i < entries.length; i += 500) {
      const chunk = entries.slice(i, i + 500);
      try {
        await renewLeases(db, chunk, leaseSec);
      } catch (err) {
        logger.warn({ err, claims: chunk.length }, 'idempotency: could not renew claims');
        break;
      }
    }
  }
  function tick(): Promise<void> {
    ticking ??= runTick().finally(() => {
      ticking = undefined;
    });
    return ticking;
  }
  const heartbeat = setInterval(() => {
    if (held.size > 0 || pending.size > 0) void tick();
  }, Math.min(heartbeatMs, 1000));
  heartbeat.unref();

  app.addHook('preHandler', async (request: FastifyRequest, reply: FastifyReply) => {
    if (request.method !== 'POST' || !request.routeOptions.url?.startsWith('/v1')) return;
    const raw = request.headers[IDEMPOTENCY_HEADER];
    if (raw === undefined) return;
    const key = Array.isArray(raw) ? raw.join(',') : raw;
    if (key.length === 0 || key.length > MAX_IDEMPOTENCY_KEY_LENGTH || !KEY_PATTERN.test(key)) {
      throw new AppError(
        'IDEMPOTENCY.KEY_INVALID',
        400,
        `Idempotency-Key must be 1-${MAX_IDEMPOTENCY_KEY_LENGTH} printable ASCII characters (a UUID is a good choice)`,
      );
    }
    const { scopeHash, tenantId, bodyKey } = scopeOf(request, key);
    const hash = requestHash(request);
    // A retry of a request whose release/record this process still owes (database was down): settle it
    // first, so the retry does not meet our own stale claim while the background retry has not run yet.
    for (const [owedToken, owed] of pending) {
      if (owed.scopeHash === scopeHash) await settleOwed(owedToken, owed).catch(() => undefined);
    }
    const token = randomBytes(16).toString('base64url');
    // Two rounds: the row we lost to may be released (5xx) between our upsert and our read.
    for (let round = 0; round < 2; round++) {
      if (await claim(scopeHash, tenantId, hash, token)) {
        held.set(token, scopeHash);
        // The request's writes join one transaction that also records the response (onSend), and that
        // first re-checks the claim is still ours while locking it: a committed effect always has its
        // stored response, and a retry can never take the claim over while the effect may still commit.
        const uow = opts.database.openUnitOfWork(async (trx) => {
          if (!(await fenceClaim(scope.join(trx), scopeHash, token, leaseSec))) {
            throw new AppError('IDEMPOTENCY.IN_FLIGHT', 409, 'This request lost its Idempotency-Key claim to a retry; its result is served to that retry', {}, { 'retry-after': '1' });
          }
        });
        setUnitOfWork(uow);
        request.idempotencyClaim = { scopeHash, bodyKey, token, uow };
        return;
      }
      const row = await readKey(db, scopeHash);
      if (!row) continue;
      if (row.request_hash !== hash) {
        throw new AppError(
          'IDEMPOTENCY.KEY_REUSED',
          422,
          'This Idempotency-Key was already used with a different request (method, path or body); use a new key',
        );
      }
      if (row.state === 'in_flight') {
        // Retry-After = the rest of the lease: by then the first request has finished (replay) or, if its
        // owner died, the claim can be taken over. Never more than one lease.
        const retryAfter = Math.min(leaseSec, Math.max(1, Math.ceil(Number(row.lease_left ?? 1))));
        throw new AppError(
          'IDEMPOTENCY.IN_FLIGHT',
          409,
          'A request with this Idempotency-Key is still being processed; retry after it completes',
          {},
          { 'retry-after': String(retryAfter) },
        );
      }
      const headers = typeof row.response_headers === 'string' ? JSON.parse(row.response_headers) : (row.response_headers ?? {});
      reply.code(row.response_status ?? 200);
      for (const [k, v] of Object.entries(headers as Record<string, string>)) reply.header(k, v);
      reply.header(REPLAYED_HEADER, 'true');
      return reply.send(row.response_body ? open(bodyKey, row.response_body) : '');
    }
    throw new AppError('IDEMPOTENCY.IN_FLIGHT', 409, 'A request with this Idempotency-Key is being processed; retry', {}, { 'retry-after': '1' });
  });

  app.addHook('onSend', async (request, reply, payload) => {
    const claimed = request.idempotencyClaim;
    if (!claimed) return payload;
    request.idempotencyClaim = undefined;
    setUnitOfWork(undefined);
    const storable = typeof payload === 'string' || Buffer.isBuffer(payload) || payload == null;
    if (reply.statusCode >= 500 || (!storable && !claimed.uow.opened)) {
      // Not final (server failure: its writes roll back) or not storable (a stream, nothing written): the
      // client may retry with the same key. If the database is down the release is retried in the background.
      await claimed.uow.rollback().catch(() => undefined);
      await settle(claimed.token, claimed.scopeHash);
      return payload;
    }
    const headers: Record<string, string> = {};
    for (const name of STORED_HEADERS) {
      const v = reply.getHeader(name);
      if (v !== undefined) headers[name] = String(v);
    }
    const text = storable && payload != null ? payload.toString() : '';
    const body = text.length === 0 ? '' : seal(claimed.bodyKey, text);
    const response = { status: reply.statusCode, headers: JSON.stringify(headers), body };
    if (claimed.uow.opened) {
      // The response is written in the transaction of the effects, then COMMIT: both or neither.
      try {
        // One round trip on pg (the record and COMMIT together): the project row a create locks for its task
        // number is held that much shorter.
        await claimed.uow.commit(recordResponseStatement(db, claimed.scopeHash, claimed.token, response));
      } catch (err) {
        held.delete(claimed.token);
        await settle(claimed.token, claimed.scopeHash);
        logger.error({ err, scopeHash: claimed.scopeHash }, 'idempotency: the request\'s transaction did not commit');
        reply.code(503).header('content-type', 'application/problem+json; charset=utf-8').header('retry-after', '1');
        return JSON.stringify(buildProblem(503, 'IDEMPOTENCY.NOT_COMMITTED', 'The request could not be completed; retry with the same Idempotency-Key', request.id));
      }
      held.delete(claimed.token);
      return payload;
    }
    // Nothing was written through a transaction: recorded before the response leaves, so a client that saw
    // this response and retries gets the replay; if the database is gone it is retried in the background.
    await settle(claimed.token, claimed.scopeHash, response);
    return payload;
  });

  // A request that ends without onSend recording it (aborted connection) must not hold its key.
  app.addHook('onResponse', async (request) => {
    const claimed = request.idempotencyClaim;
    if (!claimed) return;
    request.idempotencyClaim = undefined;
    setUnitOfWork(undefined);
    await claimed.uow.rollback().catch(() => undefined);
    await settle(claimed.token, claimed.scopeHash);
  });

  const sweep = setInterval(() => {
    void sweepIdempotencyKeys(db).catch((err) => logger.warn({ err }, 'idempotency: sweep failed'));
  }, 10 * 60_000);
  sweep.unref();
  // app.close() runs this after the listener closed and before the lifecycle closes the database pool.
  // A request can still be running here although its connection is gone (the proxy gave up on this
  // draining instance and retried elsewhere, which gets 409 meanwhile): if the pool closed under it, its
  // committed work could never be recorded, the claim would lapse and the retry would run the handler a
  // second time. So wait for this process's claims to end (each records or releases while the pool is
  // open), then flush what is owed. If the lifecycle's grace period runs out first the process exits —
  // a dead process commits nothing, and its claims lapse within one lease.
  app.addHook('onClose', async () => {
    clearInterval(sweep);
    const waitDeadline = Date.now() + (opts.closeWaitMs ?? 30_000);
    while (held.size > 0 && Date.now() < waitDeadline) await new Promise((r) => setTimeout(r, 50));
    const deadline = Date.now() + Math.min(2_000, leaseSec * 1000);
    while (pending.size > 0 && Date.now() < deadline) {
      await tick();
      if (pending.size > 0) await new Promise((r) => setTimeout(r, Math.min(heartbeatMs, 200)));
    }
    if (held.size > 0 || pending.size > 0) {
      logger.warn({ held: held.size, pending: pending.size }, 'idempotency: claims left to their lease at shutdown');
    }
    if (held.size === 0) clearInterval(heartbeat);
  });

  const handle: IdempotencyClaims = { held: () => held.size, pending: () => pending.size, tick };
  app.decorate('idempotencyClaims', handle);
  return handle;
}

export { sweepIdempotencyKeys };
