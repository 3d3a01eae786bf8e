import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createEdgeTestApp, createWidgetTable, type WidgetControls } from '../../../test/helpers/edge-fixtures.ts';
import { createTestPlatform, type TestPlatform } from '../../../test/helpers/test-platform.ts';
import { openDatabase } from '../db/database.ts';
import { newId } from '../ids.ts';
import type { App } from './server.ts';
import { sweepIdempotencyKeys } from './idempotency.ts';

const auth = (user = 'alice') => ({ authorization: `Bearer ${user}` });

function postJson(port: number, path: string, body: unknown, headers: Record<string, string>, agent: http.Agent) {
  const payload = JSON.stringify(body);
  return new Promise<{ status: number; headers: http.IncomingHttpHeaders; body: string }>((resolve, reject) => {
    const req = http.request(
      { host: '127.0.0.1', port, path, method: 'POST', agent, headers: { ...headers, 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload) } },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks).toString() }));
      },
    );
    req.on('error', reject);
    req.end(payload);
  });
}

describe(`Idempotency-Key (${process.env.TEST_DATABASE_URL ? 'postgres' : 'pglite'})`, () => {
  let t: TestPlatform;
  let app: App;
  const controls: WidgetControls = { failNext: 0, handlerCalls: 0 };
  const org = newId();

  async function countWidgets(orgId: string): Promise<number> {
    const res = await app.inject({ url: `/v1/orgs/${orgId}/widgets?limit=1`, headers: auth() });
    return res.json().count;
  }
  const post = (key: string | undefined, body: unknown, opts: { user?: string; orgId?: string; path?: string } = {}) =>
    app.inject({
      method: 'POST',
      url: `/v1/orgs/${opts.orgId ?? org}/${opts.path ?? 'widgets'}`,
      headers: { ...auth(opts.user), ...(key === undefined ? {} : { 'idempotency-key': key }) },
      payload: body as object,
    });

  beforeAll(async () => {
    t = await createTestPlatform({ env: { RATE_LIMIT_PRINCIPAL: '1000000', RATE_LIMIT_ORG: '1000000', PRESSURE_MAX_EVENT_LOOP_DELAY_MS: '0' } });
    await createWidgetTable(t.db.owner);
    app = await createEdgeTestApp(t, controls);
  });
  afterAll(async () => {
    await app?.close();
    await t?.close();
  });

  it('stores the first response and replays it (status, body, Location) with Idempotent-Replayed', async () => {
    const before = controls.handlerCalls;
    const first = await post('create-1', { name: 'one' });
    expect(first.statusCode).toBe(201);
    expect(first.headers['idempotent-replayed']).toBeUndefined();
    const again = await post('create-1', { name: 'one' });
    expect(again.statusCode).toBe(201);
    expect(again.headers['idempotent-replayed']).toBe('true');
    expect(again.json()).toEqual(first.json());
    expect(again.headers.location).toBe(first.headers.location);
    expect(again.headers['content-type']).toMatch(/application\/json/);
    expect(again.headers['x-request-id']).not.toBe(first.headers['x-request-id']);
    expect(controls.handlerCalls - before).toBe(1);
    // The stored body is sealed (responses can carry once-shown secrets): not readable from the table.
    const { rows } = await sql<{ response_body: string }>`select response_body from idempotency_keys where state = 'done'`.execute(t.db.app);
    expect(rows.length).toBeGreaterThan(0);
    for (const row of rows) expect(row.response_body).not.toContain(first.json().id);
    // Same payload with keys in another order is the same request.
    expect((await post('create-1', JSON.parse('{"name":"one"}'))).headers['idempotent-replayed']).toBe('true');
  });

  it('without a key every POST is a new request', async () => {
    const orgId = newId();
    expect((await post(undefined, { name: 'a' }, { orgId })).statusCode).toBe(201);
    expect((await post(undefined, { name: 'a' }, { orgId })).statusCode).toBe(201);
    expect(await countWidgets(orgId)).toBe(2);
  });

  it('same key with a different payload or path is 422; an invalid key is 400', async () => {
    expect((await post('reuse-1', { name: 'first' })).statusCode).toBe(201);
    const different = await post('reuse-1', { name: 'second' });
    expect(different.statusCode).toBe(422);
    expect(different.headers['content-type']).toMatch(/^application\/problem\+json/);
    expect(different.json()).toMatchObject({ code: 'IDEMPOTENCY.KEY_REUSED', status: 422 });
    const otherPath = await post('reuse-1', { name: 'first' }, { orgId: newId() });
    expect(otherPath.statusCode).toBe(201); // another org is another tenant scope, not a reuse

    const tooLong = await post('k'.repeat(256), { name: 'x' });
    expect(tooLong.statusCode).toBe(400);
    expect(tooLong.json().code).toBe('IDEMPOTENCY.KEY_INVALID');
    expect((await post('k'.repeat(255), { name: 'x' })).statusCode).toBe(201);
    expect((await post('', { name: 'x' })).json().code).toBe('IDEMPOTENCY.KEY_INVALID');
    expect((await post('tab\tkey', { name: 'x' })).json().code).toBe('IDEMPOTENCY.KEY_INVALID');
  });

  it('a second request while the first is in flight gets 409 with Retry-After, then the replay', async () => {
    const first = post('slow-1', { name: 'slow' }, { path: 'slow-widgets' });
    for (let i = 0; i < 200 && !controls.release; i++) await new Promise((r) => setTimeout(r, 10));
    expect(controls.release).toBeDefined();
    const concurrent = await post('slow-1', { name: 'slow' }, { path: 'slow-widgets' });
    expect(concurrent.statusCode).toBe(409);
    expect(concurrent.json().code).toBe('IDEMPOTENCY.IN_FLIGHT');
    // Retry-After is the rest of the claim's lease (renewed while the request runs): 1..leaseSec (5 s).
    expect(Number(concurrent.headers['retry-after'])).toBeGreaterThanOrEqual(1);
    expect(Number(concurrent.headers['retry-after'])).toBeLessThanOrEqual(5);
    // A different payload is still 422 while in flight.
    expect((await post('slow-1', { name: 'other' }, { path: 'slow-widgets' })).statusCode).toBe(422);
    controls.release!();
    controls.release = undefined;
    expect((await first).statusCode).toBe(201);
    const replay = await post('slow-1', { name: 'slow' }, { path: 'slow-widgets' });
    expect(replay.statusCode).toBe(201);
    expect(replay.json()).toEqual((await first).json());
  });

  it('a 5xx is not final (the retry runs again); a 4xx is final (replayed)', async () => {
    const orgId = newId();
    controls.failNext = 1;
    const failed = await post('flaky-1', { name: 'f' }, { orgId });
    expect(failed.statusCode).toBe(500);
    const retried = await post('flaky-1', { name: 'f' }, { orgId });
    expect(retried.statusCode).toBe(201);
    expect(retried.headers['idempotent-replayed']).toBeUndefined();
    expect(await countWidgets(orgId)).toBe(1);

    const conflict = await post('conflict-1', { name: 'conflict' }, { orgId });
    expect(conflict.statusCode).toBe(409);
    const calls = controls.handlerCalls;
    const replayed = await post('conflict-1', { name: 'conflict' }, { orgId });
    expect(replayed.statusCode).toBe(409);
    expect(replayed.headers['idempotent-replayed']).toBe('true');
    expect(replayed.json().code).toBe('WIDGETS.NAME_TAKEN');
    expect(controls.handlerCalls).toBe(calls);
  });

  it('keys are scoped to the caller and tenant; a 401/403 does not use the key', async () => {
    const a = await post('shared-key', { name: 'x' }, { user: 'alice' });
    const b = await post('shared-key', { name: 'x' }, { user: 'bob' });
    expect(a.statusCode).toBe(201);
    expect(b.statusCode).toBe(201);
    expect(b.headers['idempotent-replayed']).toBeUndefined();
    expect(b.json().id).not.toBe(a.json().id);

    const unauth = await app.inject({ method: 'POST', url: `/v1/orgs/${org}/widgets`, headers: { 'idempotency-key': 'after-401' }, payload: { name: 'y' } });
    expect(unauth.statusCode).toBe(401);
    const forbidden = await post('after-401', { name: 'y' }, { user: 'reader' });
    expect(forbidden.statusCode).toBe(403);
    const ok = await post('after-401', { name: 'y' });
    expect(ok.statusCode).toBe(201);
    expect(ok.headers['idempotent-replayed']).toBeUndefined();
  });

  it('public routes scope keys by client IP', async () => {
    const send = (ip: string) =>
      app.inject({ method: 'POST', url: '/v1/public/echo', remoteAddress: ip, headers: { 'idempotency-key': 'signup-1' }, payload: { email: 'a@example.com' } });
    const first = await send('10.0.0.1');
    const replay = await send('10.0.0.1');
    const otherIp = await send('10.0.0.2');
    expect(replay.json()).toEqual(first.json());
    expect(replay.headers['idempotent-replayed']).toBe('true');
    expect(otherIp.json().n).not.toBe(first.json().n);
  });

  it('expired keys are usable again and swept', async () => {
    const orgId = newId();
    expect((await post('expiring', { name: 'e' }, { orgId })).statusCode).toBe(201);
    await sql`update idempotency_keys set expires_at = now() - interval '1 second'`.execute(t.db.app);
    const fresh = await post('expiring', { name: 'e' }, { orgId });
    expect(fresh.statusCode).toBe(201);
    expect(fresh.headers['idempotent-replayed']).toBeUndefined();
    expect(await countWidgets(orgId)).toBe(2);
    const swept = await sweepIdempotencyKeys(t.db.scope('idempotency_keys').app);
    expect(swept).toBeGreaterThan(0);
    const { rows } = await sql<{ n: number }>`select count(*)::int as n from idempotency_keys where expires_at < now()`.execute(t.db.app);
    expect(rows[0]!.n).toBe(0);
  });

  describe('claim leases (IDEMPOTENCY_LEASE_SEC=2)', () => {
    const LEASE_SEC = 2;
    let leased: App;
    const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
    beforeAll(async () => {
      leased = await createEdgeTestApp({ ...t, config: { ...t.config, edge: { ...t.config.edge, idempotencyLeaseSec: LEASE_SEC } } }, controls);
    });
    afterAll(async () => {
      await leased?.close();
    });
    const send = (app: App, orgId: string, path: string, key: string) =>
      app.inject({ method: 'POST', url: `/v1/orgs/${orgId}/${path}`, headers: { ...auth(), 'idempotency-key': key }, payload: { name: 'lease' } });

    it('a slow live request keeps its claim past the lease (heartbeat): retries get 409, then the replay', async () => {
      const orgId = newId();
      const first = send(leased, orgId, 'slow-widgets', 'lease-live');
      for (let i = 0; i < 200 && !controls.release; i++) await sleep(10);
      expect(controls.release).toBeDefined();
      expect(leased.idempotencyClaims!.held()).toBe(1);
      await sleep(LEASE_SEC * 1000 * 2); // two leases: only renewals keep the claim
      const during = await send(leased, orgId, 'slow-widgets', 'lease-live');
      expect(during.statusCode).toBe(409);
      expect(during.json().code).toBe('IDEMPOTENCY.IN_FLIGHT');
      expect(Number(during.headers['retry-after'])).toBeGreaterThanOrEqual(1);
      expect(Number(during.headers['retry-after'])).toBeLessThanOrEqual(LEASE_SEC);
      controls.release!();
      controls.release = undefined;
      expect((await first).statusCode).toBe(201);
      expect(leased.idempotencyClaims!.held()).toBe(0);
      const replay = await send(leased, orgId, 'slow-widgets', 'lease-live');
      expect(replay.headers['idempotent-replayed']).toBe('true');
      expect(replay.json().id).toBe((await first).json().id);
      expect(await countWidgets(orgId)).toBe(1);
    });

    it('a claim whose owner stopped renewing it (process died mid-request) is taken over within the lease', async () => {
      const orgId = newId();
      const first = send(leased, orgId, 'slow-widgets', 'lease-dead');
      for (let i = 0; i < 200 && !controls.release; i++) await sleep(10);
      const releaseFirst = controls.release!;
      controls.release = undefined;
      // The owner "dies": its claim (lease as written by the claim itself) now carries a token no live
      // process renews — what a killed instance leaves behind.
      await sql`update idempotency_keys set claim_token = 'dead-process' where state = 'in_flight'`.execute(t.db.app);
      const died = Date.now();
      const blocked = await send(leased, orgId, 'slow-widgets', 'lease-dead');
      expect(blocked.statusCode).toBe(409);
      expect(Number(blocked.headers['retry-after'])).toBeLessThanOrEqual(LEASE_SEC);
      let taken: ReturnType<typeof send> | undefined;
      while (!taken && Date.now() - died < 10_000) {
        const res = send(leased, orgId, 'slow-widgets', 'lease-dead');
        let settled = false;
        const running = (async () => {
          while (!settled && !controls.release) await sleep(10);
          return 'running' as const;
        })();
        const outcome = await Promise.race([res, running]);
        settled = true;
        if (outcome === 'running' || outcome.statusCode !== 409) taken = res;
        else await sleep(100);
      }
      const waited = Date.now() - died;
      expect(taken).toBeDefined();
      expect(waited).toBeLessThan(LEASE_SEC * 1000 + 1_500);
      controls.release!();
      controls.release = undefined;
      const retried = await taken!;
      expect(retried.statusCode).toBe(201);
      expect(retried.headers['idempotent-replayed']).toBeUndefined();
      releaseFirst(); // in reality that process is gone; here its late answer must not overwrite the new record
      await first;
      const replay = await send(leased, orgId, 'slow-widgets', 'lease-dead');
      expect(replay.headers['idempotent-replayed']).toBe('true');
      expect(replay.json().id).toBe(retried.json().id);
    }, 30_000);

    it('app.close() waits for requests still holding claims, so their response is recorded before the pool can close', async () => {
      const orgId = newId();
      const closing = await createEdgeTestApp(t, controls);
      const first = send(closing, orgId, 'slow-widgets', 'close-held');
      for (let i = 0; i < 200 && !controls.release; i++) await sleep(10);
      expect(closing.idempotencyClaims!.held()).toBe(1);
      let closed = false;
      const close = closing.close().then(() => {
        closed = true;
      });
      await sleep(300);
      expect(closed).toBe(false); // still waiting for the claim's request (its connection may be long gone)
      controls.release!();
      controls.release = undefined;
      await close;
      expect((await first).statusCode).toBe(201);
      // Recorded while the database was still usable: any instance replays it.
      const replay = await send(leased, orgId, 'slow-widgets', 'close-held');
      expect(replay.headers['idempotent-replayed']).toBe('true');
      expect(await countWidgets(orgId)).toBe(1);
    });
  });

  it('1,000 concurrent POSTs over real HTTP to two instances with one key create exactly one resource', async () => {
    const orgId = newId();
    // Two API instances (two listeners, two app objects) over the same database, requests alternating.
    // On Postgres the second instance has its own connection pool, as a second process would.
    const db2 = t.testDb.url ? await openDatabase({ databaseUrl: t.testDb.url }) : t.db;
    const servers = [await createEdgeTestApp(t, controls), await createEdgeTestApp({ ...t, db: db2 }, controls)];
    for (const s of servers) await s.listen({ port: 0, host: '127.0.0.1' });
    const ports = servers.map((s) => (s.server.address() as AddressInfo).port);
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1000 });
    try {
      const started = Date.now();
      const results = await Promise.all(
        Array.from({ length: 1000 }, (_, i) =>
          postJson(ports[i % 2]!, `/v1/orgs/${orgId}/widgets`, { name: 'race' }, { ...auth(), 'idempotency-key': 'race-key' }, agent),
        ),
      );
      const elapsed = Date.now() - started;
      const created = results.filter((r) => r.status === 201 && !r.headers['idempotent-replayed']);
      const replayed = results.filter((r) => r.status === 201 && r.headers['idempotent-replayed'] === 'true');
      const inFlight = results.filter((r) => r.status === 409);
      const others = results.filter((r) => r.status !== 409 && r.status !== 201);
      expect(others.map((r) => r.body).slice(0, 3)).toEqual([]);
      expect(created).toHaveLength(1);
      expect(replayed.length + inFlight.length).toBe(999);
      for (const r of replayed) expect(JSON.parse(r.body).id).toBe(JSON.parse(created[0]!.body).id);
      for (const r of inFlight) expect(JSON.parse(r.body).code).toBe('IDEMPOTENCY.IN_FLIGHT');
      expect(await countWidgets(orgId)).toBe(1);
      console.info(`idempotency race: 1000 POSTs in ${elapsed} ms: 1 created, ${replayed.length} replayed, ${inFlight.length} × 409`);
    } finally {
      agent.destroy();
      await Promise.all(servers.map((s) => s.close()));
      if (db2 !== t.db) await db2.close();
    }
  }, 180_000); // ~2-8 s alone; far longer when the whole suite shares two cores
});
