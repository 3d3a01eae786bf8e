import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runJobsCommand } from '../../cli.ts';
import { createApiApp } from '../../main.ts';
import { adminAndMember, captureLogger, countEffects, createEffectsTable, waitFor } from '../../../test/helpers/jobs.ts';
import { createTestPlatform, type TestPlatform } from '../../../test/helpers/test-platform.ts';
import { newId } from '../ids.ts';
import { testTables } from '../testing/test-db.ts';
import { MAX_PAYLOAD_BYTES } from './publisher.ts';
import { currentEventContext } from './event-context.ts';
import { backoffDelay, parseCron } from './cron.ts';

const TENANT_A = newId();
const TENANT_B = newId();
const TRACEPARENT = '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01';

let tp: TestPlatform;
let ADMIN: { authorization: string };
let MEMBER: { authorization: string };
let logs: Array<Record<string, any>>;
const calls = new Map<string, number>();
const attemptTimes: number[] = [];
let flakySucceeds = false;
let seenContext: { requestId?: string; traceparent?: string } | undefined;

async function delivery(eventId: string, consumer: string) {
  return tp.db.app.selectFrom('job_deliveries').selectAll().where('event_id', '=', eventId).where('consumer', '=', consumer).executeTakeFirst();
}

async function publish(tenantId: string, name: string, payload: unknown = {}) {
  return tp.db.withTenant(tenantId, (trx) => tp.events.add(trx, { name, tenantId, payload }));
}

beforeAll(async () => {
  const captured = captureLogger();
  logs = captured.lines;
  tp = await createTestPlatform({ logger: captured.logger, env: { JOBS_POLL_MS: '20', JOBS_STALLED_MS: '2000' } });
  ({ admin: ADMIN, member: MEMBER } = await adminAndMember(tp));
  await createEffectsTable(tp.db.owner);
  const effect = (consumer: string) => async (event: any, ctx: any) => {
    calls.set(`${consumer}/${event.id}`, (calls.get(`${consumer}/${event.id}`) ?? 0) + 1);
    await sql`insert into test_effects (tenant_id, event_id, consumer) values (${event.tenantId}, ${event.id}, ${consumer})`.execute(ctx.trx);
  };
  tp.events.subscribe('test.created', 'test.audit', effect('test.audit'));
  tp.events.subscribe('test.created', 'test.notify', effect('test.notify'));
  tp.events.subscribe('test.traced', 'test.traced_logger', async (event, ctx) => {
    seenContext = { ...currentEventContext() };
    ctx.logger.info({ payload: event.payload }, 'traced handler ran');
  });
  tp.events.subscribe(
    'test.flaky',
    'test.flaky_handler',
    async (event, ctx) => {
      attemptTimes.push(Date.now());
      if (!flakySucceeds) throw new Error('downstream unavailable');
      await effect('test.flaky_handler')(event, ctx);
    },
    { maxAttempts: 3, backoffBaseMs: 60, backoffMaxMs: 1_000 },
  );
  await tp.events.startWorker();
});

afterAll(async () => {
  await tp?.close();
});

describe('transactional outbox', () => {
  it('publishes nothing for a rolled-back transaction, and the committed event reaches every consumer once', async () => {
    await expect(
      tp.db.withTenant(TENANT_A, async (trx) => {
        await tp.events.add(trx, { name: 'test.created', tenantId: TENANT_A, payload: { n: 'rolled back' } });
        throw new Error('use case failed after adding the event');
      }),
    ).rejects.toThrow('use case failed');
    const committed = await publish(TENANT_A, 'test.created', { n: 'committed' });
    await waitFor(() => countEffects(tp.db.owner), (m) => m.get(`test.notify/${committed.id}`) === 1 && m.get(`test.audit/${committed.id}`) === 1);
    const outbox = await tp.db.app.selectFrom('outbox').select(['id', 'payload']).execute();
    expect(outbox.map((r) => r.payload)).not.toContainEqual({ n: 'rolled back' });
    const effects = await countEffects(tp.db.owner);
    expect([...effects.keys()].every((k) => k.endsWith(committed.id))).toBe(true);
    expect(effects.size).toBe(2); // fan-out: one effect per consumer, none for the rolled-back event
  });

  it('rejects malformed event names and oversized payloads at add time', async () => {
    await expect(publish(TENANT_A, 'NoModule')).rejects.toThrow(/invalid event name/);
    await expect(publish(TENANT_A, 'test.big', { blob: 'x'.repeat(MAX_PAYLOAD_BYTES + 1) })).rejects.toThrow(/exceeds/);
    expect(() => tp.events.subscribe('test.created', 'Bad Consumer!', async () => {})).toThrow(/invalid consumer/);
    expect(() => tp.events.subscribe('test.created', 'test.audit', async () => {})).toThrow(/already subscribed/);
  });

  it('fans out across tenants with each handler inside its event tenant context (RLS)', async () => {
    const a = await publish(TENANT_A, 'test.created');
    const b = await publish(TENANT_B, 'test.created');
    await waitFor(() => countEffects(tp.db.owner), (m) => [a, b].every((e) => m.get(`test.audit/${e.id}`) === 1 && m.get(`test.notify/${e.id}`) === 1));
    const seenByB = await testTables(tp.db).withTenant(TENANT_B, (trx) => trx.selectFrom('test_effects').select('event_id').execute());
    expect(new Set(seenByB.map((r) => r.event_id))).toEqual(new Set([b.id]));
  });
});

describe('idempotent consumers', () => {
  it('a redelivered event produces one effect', async () => {
    const e = await publish(TENANT_A, 'test.created');
    await waitFor(() => delivery(e.id, 'test.audit'), (d) => d?.status === 'done');
    const before = calls.get(`test.audit/${e.id}`);
    // Force redelivery: as if the acknowledgement was lost, the delivery is pending again and gets swept.
    await sql`update job_deliveries set status = 'pending' where event_id = ${e.id}`.execute(tp.db.app);
    const swept = await tp.events.sweepOnce(0);
    expect(swept).toBeGreaterThanOrEqual(2);
    await waitFor(() => delivery(e.id, 'test.audit'), (d) => d?.status === 'done');
    await waitFor(() => delivery(e.id, 'test.notify'), (d) => d?.status === 'done');
    const effects = await countEffects(tp.db.owner);
    expect(effects.get(`test.audit/${e.id}`)).toBe(1);
    expect(effects.get(`test.notify/${e.id}`)).toBe(1);
    expect(calls.get(`test.audit/${e.id}`)).toBe(before); // the processed-event record stopped the handler
    const processed = await sql<{ n: number }>`select count(*)::int as n from processed_events where event_id = ${e.id}`.execute(tp.db.app);
    expect(processed.rows[0]!.n).toBe(2);
  });

  it('relaying the same outbox row twice creates no second delivery', async () => {
    const e = await publish(TENANT_A, 'test.created');
    await waitFor(() => delivery(e.id, 'test.notify'), (d) => d?.status === 'done');
    await sql`update outbox set relayed_at = null where id = ${e.id}`.execute(tp.db.app);
    await waitFor(() => tp.db.app.selectFrom('outbox').select('relayed_at').where('id', '=', e.id).executeTakeFirst(), (r) => r?.relayed_at != null);
    const n = await sql<{ n: number }>`select count(*)::int as n from job_deliveries where event_id = ${e.id}`.execute(tp.db.app);
    expect(n.rows[0]!.n).toBe(2);
    expect((await countEffects(tp.db.owner)).get(`test.notify/${e.id}`)).toBe(1);
  });
});

describe('retries, dead letters and redrive', () => {
  let deadId: string;
  let eventId: string;

  it('retries with growing, jittered delays, then dead-letters after maxAttempts', async () => {
    flakySucceeds = false;
    attemptTimes.length = 0;
    const e = await publish(TENANT_A, 'test.flaky');
    eventId = e.id;
    const dead = await waitFor(() => delivery(e.id, 'test.flaky_handler'), (d) => d?.status === 'dead');
    expect(dead).toMatchObject({ attempts: 3, max_attempts: 3, last_error: 'downstream unavailable' });
    expect(attemptTimes).toHaveLength(3);
    const [g1, g2] = [attemptTimes[1]! - attemptTimes[0]!, attemptTimes[2]! - attemptTimes[1]!];
    expect(g1).toBeGreaterThanOrEqual(30); // 60 ms · [0.5, 1]
    expect(g2).toBeGreaterThanOrEqual(60); // 120 ms · [0.5, 1]
    deadId = dead!.id;
    await new Promise((r) => setTimeout(r, 300));
    expect(attemptTimes).toHaveLength(3); // dead means no more attempts
    expect(logs.some((l) => l.msg?.includes('dead-lettered') && l.deliveryId === deadId && !('stack' in l))).toBe(true);
  });

  it('GET /v1/admin/jobs/dead lists it for platform admins only', async () => {
    expect((await tp.app.inject({ url: '/v1/admin/jobs/dead' })).statusCode).toBe(401);
    const forbidden = await tp.app.inject({ url: '/v1/admin/jobs/dead', headers: MEMBER });
    expect(forbidden.statusCode).toBe(403);
    expect(forbidden.headers['content-type']).toContain('application/problem+json');
    const res = await tp.app.inject({ url: '/v1/admin/jobs/dead', headers: ADMIN });
    expect(res.statusCode).toBe(200);
    expect(res.json().data).toContainEqual(
      expect.objectContaining({ id: deadId, eventId, consumer: 'test.flaky_handler', eventName: 'test.flaky', attempts: 3, lastError: 'downstream unavailable' }),
    );
    expect((await tp.app.inject({ url: '/v1/admin/jobs/dead?limit=0', headers: ADMIN })).statusCode).toBe(400);
    expect((await tp.app.inject({ url: '/v1/admin/jobs/dead?cursor=bm90LWEtdXVpZA', headers: ADMIN })).json().code).toBe('HTTP.BAD_CURSOR');
  });

  it('POST /v1/admin/jobs/:id/redrive sends it back; it then succeeds once', async () => {
    expect((await tp.app.inject({ method: 'POST', url: `/v1/admin/jobs/${deadId}/redrive` })).statusCode).toBe(401);
    expect((await tp.app.inject({ method: 'POST', url: `/v1/admin/jobs/${deadId}/redrive`, headers: MEMBER })).statusCode).toBe(403);
    expect((await tp.app.inject({ method: 'POST', url: '/v1/admin/jobs/not-a-uuid/redrive', headers: ADMIN })).statusCode).toBe(400);
    const missing = await tp.app.inject({ method: 'POST', url: `/v1/admin/jobs/${newId()}/redrive`, headers: ADMIN });
    expect(missing.statusCode).toBe(404);
    expect(missing.json().code).toBe('JOBS.NOT_FOUND');
    flakySucceeds = true;
    const res = await tp.app.inject({ method: 'POST', url: `/v1/admin/jobs/${deadId}/redrive`, headers: ADMIN });
    expect(res.statusCode).toBe(202);
    expect(res.json()).toMatchObject({ id: deadId, status: 'pending', attempts: 0 });
    await waitFor(() => delivery(eventId, 'test.flaky_handler'), (d) => d?.status === 'done');
    expect((await countEffects(tp.db.owner)).get(`test.flaky_handler/${eventId}`)).toBe(1);
    const again = await tp.app.inject({ method: 'POST', url: `/v1/admin/jobs/${deadId}/redrive`, headers: ADMIN });
    expect(again.statusCode).toBe(409);
    expect(again.json()).toMatchObject({ code: 'JOBS.NOT_DEAD', requestId: expect.any(String) });
  });

  it('plinth jobs dead / redrive do the same from the CLI', async () => {
    flakySucceeds = false;
    const e = await publish(TENANT_B, 'test.flaky');
    const dead = await waitFor(() => delivery(e.id, 'test.flaky_handler'), (d) => d?.status === 'dead');
    const out: string[] = [];
    const err: string[] = [];
    const io = { log: (s: string) => out.push(s), error: (s: string) => err.push(s) };
    expect(await runJobsCommand(tp, 'dead', undefined, io)).toBe(0);
    expect(out.map((l) => JSON.parse(l).id)).toContain(dead!.id);
    expect(await runJobsCommand(tp, 'redrive', newId(), io)).toBe(1);
    expect(err.at(-1)).toMatch(/^JOBS.NOT_FOUND/);
    flakySucceeds = true;
    out.length = 0;
    expect(await runJobsCommand(tp, 'redrive', dead!.id, io)).toBe(0);
    expect(JSON.parse(out[0]!)).toMatchObject({ id: dead!.id, status: 'pending' });
    await waitFor(() => delivery(e.id, 'test.flaky_handler'), (d) => d?.status === 'done');
    expect(await runJobsCommand(tp, 'redrive', dead!.id, io)).toBe(1);
    expect(err.at(-1)).toMatch(/^JOBS.NOT_DEAD/);
  });
});

describe('context propagation', () => {
  it('the request id and traceparent of the request that added the event reach the handler and its logs', async () => {
    const app = await createApiApp(tp, {
      authenticator: tp.modules.authenticator,
      routes: [
        {
          name: 'test',
          prefix: '/v1/test',
          plugin: async (scope) => {
            scope.post('/traced', { config: { permission: 'authenticated' } }, async () => {
              const e = await tp.db.withTenant(TENANT_A, (trx) => tp.events.add(trx, { name: 'test.traced', tenantId: TENANT_A, payload: { hello: 1 } }));
              return { id: e.id };
            });
          },
        },
      ],
    });
    try {
      const res = await app.inject({ method: 'POST', url: '/v1/test/traced', headers: { ...MEMBER, 'x-request-id': 'req-trace-42', traceparent: TRACEPARENT } });
      expect(res.statusCode).toBe(200);
      const id = res.json().id;
      const line = await waitFor(async () => logs.find((l) => l.msg === 'traced handler ran' && l.eventId === id), (l) => Boolean(l));
      expect(line).toMatchObject({ requestId: 'req-trace-42', traceparent: TRACEPARENT, consumer: 'test.traced_logger', event: 'test.traced' });
      expect(seenContext).toEqual({ requestId: 'req-trace-42', traceparent: TRACEPARENT });
      // A malformed traceparent from a client is dropped, the request id still travels.
      const bad = await app.inject({ method: 'POST', url: '/v1/test/traced', headers: { ...MEMBER, 'x-request-id': 'req-bad-tp', traceparent: 'garbage' } });
      const row = await tp.db.app.selectFrom('outbox').select(['request_id', 'traceparent']).where('id', '=', bad.json().id).executeTakeFirst();
      expect(row).toEqual({ request_id: 'req-bad-tp', traceparent: null });
    } finally {
      await app.close();
    }
  });
});

describe('queue dashboard', () => {
  it('/admin/queues is for platform admins only', async () => {
    expect((await tp.app.inject({ url: '/admin/queues' })).statusCode).toBe(401);
    const member = await tp.app.inject({ url: '/admin/queues', headers: MEMBER });
    expect(member.statusCode).toBe(403);
    expect(member.json().code).toBe('AUTH.FORBIDDEN');
    const res = await tp.app.inject({ url: '/admin/queues', headers: ADMIN });
    expect(res.statusCode).toBe(200);
    if (tp.config.redisUrl) {
      expect(res.headers['content-type']).toContain('text/html');
      const api = await tp.app.inject({ url: '/admin/queues/api/queues', headers: ADMIN });
      expect(api.statusCode).toBe(200);
      expect(JSON.stringify(api.json())).toContain('test.audit');
      expect((await tp.app.inject({ url: '/admin/queues/api/queues' })).statusCode).toBe(401);
    } else {
      expect(res.json()).toMatchObject({ transport: 'in-process', queues: expect.arrayContaining([expect.objectContaining({ consumer: 'test.audit' })]) });
    }
  });
});

describe('scheduling helpers', () => {
  it('backoff grows exponentially, is capped, and jitters within 50–100 %', () => {
    expect(backoffDelay(1, 100, 10_000, () => 1)).toBe(100);
    expect(backoffDelay(3, 100, 10_000, () => 1)).toBe(400);
    expect(backoffDelay(3, 100, 10_000, () => 0)).toBe(200);
    expect(backoffDelay(20, 100, 10_000, () => 1)).toBe(10_000);
  });

  it('cron: next run in UTC; rejects bad expressions', () => {
    const from = new Date('2026-01-01T10:15:30Z');
    expect(parseCron('17 3 * * *')(from).toISOString()).toBe('2026-01-02T03:17:00.000Z');
    expect(parseCron('*/20 * * * *')(from).toISOString()).toBe('2026-01-01T10:20:00.000Z');
    expect(parseCron('0 9 * * 1')(from).toISOString()).toBe('2026-01-05T09:00:00.000Z'); // next Monday
    expect(() => parseCron('61 * * * *')).toThrow();
    expect(() => parseCron('* * *')).toThrow(/5 fields/);
  });
});
