import { createCipheriv, createDecipheriv, createHash, randomBytes } from 'node:crypto';
import type { FastifyReply, FastifyRequest } from 'fastify';
import { sql, type Kysely } from 'kysely';
import type { Logger } from 'pino';
import { AppError } from './errors.ts';
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
    idempotencyClaim?: { scopeHash: string; bodyKey: Buffer };
  }
}

export interface IdempotencyOptions {
  /** The app-role connection; the table is global (scope hashed into the key). */
  db: Kysely<any>;
  ttlSec: number;
  /** How long an in-flight claim blocks retries if its process dies before recording a response. */
  lockSec?: number;
  logger: Logger;
}

function sha256(text: string): string {
  return createHash('sha256').update(text).digest('hex');
}

/** JSON with object keys sorted, so `{"a":1,"b":2}` and `{"b":2,"a":1}` are the same payload. */
function canonicalJson(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(',')}]`;
  if (value && typeof value === 'object') {
    const entries = Object.keys(value as object)
      .sort()
      .map((k) => `${JSON.stringify(k)}:${canonicalJson((value as Record<string, unknown>)[k])}`);
    return `{${entries.join(',')}}`;
  }
  return JSON.stringify(value) ?? 'null';
}

/**
 * Tenant + caller + key: a key is only ever visible to the caller (user, API key, or IP) that sent it.
 * The stored body is encrypted with a key derived from the same inputs (never stored), because responses
 * can hold secrets shown once (a new API key, a session token): the table alone cannot reveal them.
 */
function scopeOf(request: FastifyRequest, key: string): { scopeHash: string; tenantId: string | null; bodyKey: Buffer } {
  const p = request.principal;
  const tenantId = request.access?.orgId ?? p?.apiKeyOrgId ?? null;
  const caller = p ? (p.apiKeyId ? `key:${p.apiKeyId}` : `user:${p.userId}`) : `ip:${request.ip}`;
  const scope = `${tenantId ?? '-'}\n${caller}\n${key}`;
  return { scopeHash: sha256(scope), tenantId, bodyKey: createHash('sha256').update(`response-body\n${scope}`).digest() };
}

function seal(bodyKey: Buffer, text: string): string {
  const iv = randomBytes(12);
  const cipher = createCipheriv('aes-256-gcm', bodyKey, iv);
  const data = Buffer.concat([cipher.update(text, 'utf8'), cipher.final()]);
  return Buffer.concat([iv, cipher.getAuthTag(), data]).toString('base64');
}

function open(bodyKey: Buffer, sealed: string): string {
  const raw = Buffer.from(sealed, 'base64');
  const decipher = createDecipheriv('aes-256-gcm', bodyKey, raw.subarray(0, 12));
  decipher.setAuthTag(raw.subarray(12, 28));
  return Buffer.concat([decipher.update(raw.subarray(28)), decipher.final()]).toString('utf8');
}

function requestHash(request: FastifyRequest): string {
  return sha256(`${request.method}\n${request.url}\n${canonicalJson(request.body ?? null)}`);
}

interface StoredRow {
  request_hash: string;
  state: 'in_flight' | 'done';
  locked_until: Date | string;
  response_status: number | null;
  response_headers: Record<string, string> | string | null;
  response_body: string | null;
}

/**
 * Idempotency-Key for every POST under /v1 (draft-ietf-httpapi-idempotency-key-header, Stripe semantics):
 * the first response is stored and replayed for `ttlSec`; a request with the same key while the first is
 * in flight gets 409; the same key with a different payload 422; a 5xx is not stored (retry allowed).
 * The claim is one atomic upsert on the primary key, so any number of processes agree on one winner.
 */
export function registerIdempotency(app: App, opts: IdempotencyOptions): void {
  const { db, ttlSec, logger } = opts;
  const lockSec = opts.lockSec ?? 60;

  async function claim(scopeHash: string, tenantId: string | null, hash: string): Promise<boolean> {
    const { rows } = await sql<{ scope_hash: string }>`
      insert into idempotency_keys (scope_hash, tenant_id, request_hash, state, locked_until, expires_at)
      values (${scopeHash}, ${tenantId}, ${hash}, 'in_flight',
              now() + make_interval(secs => ${lockSec}), now() + make_interval(secs => ${ttlSec}))
      on conflict (scope_hash) do update set
        request_hash = excluded.request_hash, state = 'in_flight', locked_until = excluded.locked_until,
        expires_at = excluded.expires_at, created_at = now(),
        response_status = null, response_headers = null, response_body = null
      where idempotency_keys.expires_at < now()
         or (idempotency_keys.state = 'in_flight' and idempotency_keys.locked_until < now()
             and idempotency_keys.request_hash = excluded.request_hash)
      returning scope_hash`.execute(db);
    return rows.length === 1;
  }

  async function release(scopeHash: string): Promise<void> {
    await sql`delete from idempotency_keys where scope_hash = ${scopeHash} and state = 'in_flight'`.execute(db);
  }

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
    // Two rounds: the row we lost to may be released (5xx) between our upsert and our read.
    for (let round = 0; round < 2; round++) {
      if (await claim(scopeHash, tenantId, hash)) {
        request.idempotencyClaim = { scopeHash, bodyKey };
        return;
      }
      const { rows } = await sql<StoredRow>`
        select request_hash, state, locked_until, response_status, response_headers, response_body
        from idempotency_keys where scope_hash = ${scopeHash}`.execute(db);
      const row = rows[0];
      if (!row) continue;
      if (row.request_hash !== hash) {
        throw new AppError(
          'IDEMPOTENCY.KEY_REUSED',
          422,
          'This Idempotency-Key was already used with a different request (method, path or body); use a new key',
        );
      }
      if (row.state === 'in_flight') {
        throw new AppError(
          'IDEMPOTENCY.IN_FLIGHT',
          409,
          'A request with this Idempotency-Key is still being processed; retry after it completes',
          {},
          { 'retry-after': '1' },
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
    try {
      if (reply.statusCode >= 500 || (typeof payload !== 'string' && !Buffer.isBuffer(payload) && payload != null)) {
        // Not final (server failure) or not storable (a stream): the client may retry with the same key.
        await release(claimed.scopeHash);
        return payload;
      }
      const headers: Record<string, string> = {};
      for (const name of STORED_HEADERS) {
        const v = reply.getHeader(name);
        if (v !== undefined) headers[name] = String(v);
      }
      const body = payload == null || payload.length === 0 ? '' : seal(claimed.bodyKey, payload.toString());
      // Recorded before the response leaves: a client that saw this response and retries gets the replay.
      await sql`
        update idempotency_keys set state = 'done', response_status = ${reply.statusCode},
          response_headers = ${JSON.stringify(headers)}::jsonb, response_body = ${body}
        where scope_hash = ${claimed.scopeHash} and state = 'in_flight'`.execute(db);
    } catch (err) {
      // The response itself succeeded; the claim expires after lockSec and the key becomes usable again.
      logger.error({ err }, 'idempotency: could not record the response');
    }
    return payload;
  });

  // A request that ends without onSend recording it (aborted connection) must not hold its key forever.
  app.addHook('onResponse', async (request) => {
    const claimed = request.idempotencyClaim;
    if (!claimed) return;
    request.idempotencyClaim = undefined;
    await release(claimed.scopeHash).catch((err) => logger.error({ err }, 'idempotency: could not release a claim'));
  });

  const sweep = setInterval(() => {
    void sweepIdempotencyKeys(db).catch((err) => logger.warn({ err }, 'idempotency: sweep failed'));
  }, 10 * 60_000);
  sweep.unref();
  app.addHook('onClose', async () => clearInterval(sweep));
}

/** Deletes expired keys in batches; returns how many went. */
export async function sweepIdempotencyKeys(db: Kysely<any>, batch = 1000): Promise<number> {
  const result = await sql`
    delete from idempotency_keys where scope_hash in (
      select scope_hash from idempotency_keys where expires_at < now() limit ${batch})`.execute(db);
  return Number(result.numAffectedRows ?? 0);
}
