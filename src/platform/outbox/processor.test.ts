import { sql } from 'kysely';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { countEffects, createEffectsTable } from '../../../test/helpers/jobs.ts';
import { newId } from '../ids.ts';
import { createTestDatabase, type TestDatabase } from '../testing/test-db.ts';
import { createInProcessTransport } from './in-process-transport.ts';
import { createProcessor } from './processor.ts';
import { addToOutbox, toEnvelope, type OutboxRow } from './publisher.ts';
import { createRegistry } from './registry.ts';
import { relayOnce } from './relay.ts';
import type { DeliveryJob } from './transport.ts';

const logger = pino({ level: 'silent' });
const TENANT_A = newId();
const TENANT_B = newId();

/** The batch processor, driven directly: the relay writes real deliveries, the processor runs them. */
describe('batch processor', () => {
  let t: TestDatabase;
  const registry = createRegistry();
  const runs: Array<{ consumer: string; eventId: string; txid: string; tenant: string; sees: string[] }> = [];
  const failing = new Set<string>();

  beforeAll(async () => {
    t = await createTestDatabase();
    await createEffectsTable(t.db.owner);
    for (const consumer of ['test.batch_one', 'test.batch_two']) {
      registry.subscribe('test.batched', consumer, async (event, { trx }) => {
        const { rows } = await sql<{ txid: string; tenant: string; sees: string[] }>`
          select txid_current()::text as txid, current_setting('app.tenant_id', true) as tenant,
            array(select distinct tenant_id::text from test_effects) as sees`.execute(trx);
        runs.push({ consumer, eventId: event.id, ...rows[0]! });
        await sql`insert into test_effects (tenant_id, event_id, consumer) values (${event.tenantId}, ${event.id}, ${consumer})`.execute(trx);
        if (failing.has(`${consumer}/${event.id}`)) throw new Error('downstream unavailable');
      }, { backoffBaseMs: 1_000 });
    }
  });
  afterAll(async () => {
    await t?.drop();
  });

  /** Publishes events, relays them, and returns their deliveries as the transport would hand them over. */
  async function deliveries(tenants: string[]): Promise<DeliveryJob[]> {
    for (const tenant of tenants) await t.db.withTenant(tenant, (trx) => addToOutbox(trx, { name: 'test.batched', tenantId: tenant, payload: {} }));
    let jobs: DeliveryJob[] = [];
    await relayOnce(t.db, registry, async (j) => void (jobs = j), 3_600_000);
    return jobs;
  }

  it('runs a batch in one transaction per consumer across tenants, each handler in its own tenant context, each effect once', async () => {
    runs.length = 0;
    const jobs = await deliveries([TENANT_A, TENANT_B, TENANT_A]);
    expect(jobs).toHaveLength(6);
    const outcomes = await createProcessor(t.db, registry, logger)(jobs);
    expect(outcomes).toEqual(jobs.map(() => ({})));
    expect(runs).toHaveLength(6);
    // Each handler saw its event's tenant (and its RLS-checked insert into test_effects passed under it).
    const tenantOfEvent = new Map(jobs.map((j) => [j.event.id, j.event.tenantId]));
    for (const r of runs) expect(r.tenant).toBe(tenantOfEvent.get(r.eventId));
    // ...and RLS hid the other tenant's effects written earlier in the same transaction.
    for (const r of runs) expect(r.sees.every((x) => x === r.tenant)).toBe(true);
    expect(runs.some((r) => r.tenant === TENANT_B)).toBe(true);
    const txOf = (consumer: string) => new Set(runs.filter((r) => r.consumer === consumer).map((r) => r.txid));
    expect(txOf('test.batch_one').size).toBe(1);
    expect(txOf('test.batch_two').size).toBe(1);
    expect(new Set(runs.map((r) => r.txid)).size).toBe(2);
    // Tenant order inside a transaction (the lock order every transaction shares).
    for (const consumer of ['test.batch_one', 'test.batch_two']) {
      const order = runs.filter((r) => r.consumer === consumer).map((r) => r.tenant);
      expect(order).toEqual([...order].sort());
    }
    const effects = await countEffects(t.db.owner);
    for (const j of jobs) expect(effects.get(`${j.consumer}/${j.event.id}`)).toBe(1);
    const status = await t.db.app.selectFrom('job_deliveries').select(['status', 'attempts']).where('id', 'in', jobs.map((j) => j.deliveryId)).execute();
    expect(status.every((s) => s.status === 'done' && s.attempts === 1)).toBe(true);

    // Handed over again (a redelivery): everything is settled, no handler runs.
    runs.length = 0;
    expect(await createProcessor(t.db, registry, logger)(jobs)).toEqual(jobs.map(() => ({})));
    expect(runs).toHaveLength(0);
  });

  it('one failing handler is rolled back alone: the others commit and ran once, only it is retried', async () => {
    const jobs = await deliveries([TENANT_A, TENANT_A, TENANT_A]);
    const victim = jobs[2]!;
    failing.add(`${victim.consumer}/${victim.event.id}`);
    runs.length = 0;
    const outcomes = await createProcessor(t.db, registry, logger)(jobs);
    failing.clear();
    // Each handler ran once (an effect outside the database, e.g. a webhook, is not repeated), in one transaction.
    expect(runs.map((r) => `${r.consumer}/${r.eventId}`).sort()).toEqual(jobs.map((j) => `${j.consumer}/${j.event.id}`).sort());
    expect(new Set(runs.filter((r) => r.consumer === victim.consumer).map((r) => r.txid)).size).toBe(1);
    expect(outcomes[2]!.retryAfterMs).toBeGreaterThan(0);
    expect(outcomes.filter((o) => o.retryAfterMs !== undefined)).toHaveLength(1);
    const effects = await countEffects(t.db.owner);
    for (const j of jobs) expect(effects.get(`${j.consumer}/${j.event.id}`) ?? 0).toBe(j === victim ? 0 : 1);
    const rows = await t.db.app.selectFrom('job_deliveries').select(['id', 'status', 'attempts', 'last_error']).where('id', 'in', jobs.map((j) => j.deliveryId)).execute();
    const byId = new Map(rows.map((r) => [r.id, r]));
    expect(byId.get(victim.deliveryId)).toMatchObject({ status: 'pending', attempts: 1, last_error: 'downstream unavailable' });
    for (const j of jobs.filter((j) => j !== victim)) expect(byId.get(j.deliveryId)).toMatchObject({ status: 'done', attempts: 1 });
    const processed = await sql<{ n: number }>`select count(*)::int as n from processed_events where event_id = ${victim.event.id} and consumer = ${victim.consumer}`.execute(t.db.app);
    expect(processed.rows[0]!.n).toBe(0);

    // The retry succeeds and is the victim's only effect.
    expect(await createProcessor(t.db, registry, logger)([victim])).toEqual([{}]);
    expect((await countEffects(t.db.owner)).get(`${victim.consumer}/${victim.event.id}`)).toBe(1);
  });

  it('across tenants: a failing handler of one tenant is rolled back alone, the other tenants\' effects commit', async () => {
    const jobs = (await deliveries([TENANT_A, TENANT_B, TENANT_A])).filter((j) => j.consumer === 'test.batch_one');
    const victim = jobs.find((j) => j.event.tenantId === TENANT_B)!;
    failing.add(`${victim.consumer}/${victim.event.id}`);
    runs.length = 0;
    const outcomes = await createProcessor(t.db, registry, logger)(jobs);
    failing.clear();
    expect(new Set(runs.map((r) => r.txid)).size).toBe(1);
    expect(outcomes.filter((o) => o.retryAfterMs !== undefined)).toHaveLength(1);
    const effects = await countEffects(t.db.owner);
    for (const j of jobs) expect(effects.get(`${j.consumer}/${j.event.id}`) ?? 0).toBe(j === victim ? 0 : 1);
    expect(await createProcessor(t.db, registry, logger)([victim])).toEqual([{}]);
    expect((await countEffects(t.db.owner)).get(`${victim.consumer}/${victim.event.id}`)).toBe(1);
  });

  it('batch-safe: one transaction without savepoints; one failure rolls the batch back, then each runs alone, each effect once', async () => {
    const safeRuns: string[] = [];
    const txids = new Set<string>();
    let victimId = '';
    registry.subscribe('test.safe', 'test.safe_one', async (event, { trx }) => {
      safeRuns.push(event.id);
      txids.add((await sql<{ txid: string }>`select txid_current()::text as txid`.execute(trx)).rows[0]!.txid);
      await sql`insert into test_effects (tenant_id, event_id, consumer) values (${event.tenantId}, ${event.id}, 'test.safe_one')`.execute(trx);
      if (event.id === victimId) throw new Error('constraint says no');
    }, { batchSafe: true });
    const publish = async (n: number) => {
      for (let i = 0; i < n; i++) await t.db.withTenant(TENANT_A, (trx) => addToOutbox(trx, { name: 'test.safe', tenantId: TENANT_A, payload: {} }));
      let jobs: DeliveryJob[] = [];
      await relayOnce(t.db, registry, async (j) => void (jobs = j), 3_600_000);
      return jobs;
    };
    const processor = createProcessor(t.db, registry, logger);
    // All succeed: one transaction, every handler once.
    const ok = await publish(3);
    expect(await processor(ok)).toEqual(ok.map(() => ({})));
    expect(safeRuns.sort()).toEqual(ok.map((j) => j.event.id).sort());
    expect(txids.size).toBe(1);

    // One fails: the batch's transaction is rolled back, each delivery then runs in its own transaction.
    safeRuns.length = 0;
    const jobs = await publish(3);
    victimId = jobs[1]!.event.id;
    const outcomes = await processor(jobs);
    expect(outcomes[1]!.retryAfterMs).toBeGreaterThan(0);
    expect(outcomes.filter((o) => o.retryAfterMs !== undefined)).toHaveLength(1);
    // Ran twice at most (batch, then alone); committed once: one effect per event, none for the victim.
    for (const j of jobs) expect(safeRuns.filter((id) => id === j.event.id).length).toBeLessThanOrEqual(2);
    const effects = await countEffects(t.db.owner);
    for (const j of [...ok, ...jobs]) expect(effects.get(`test.safe_one/${j.event.id}`) ?? 0).toBe(j.event.id === victimId ? 0 : 1);
    const rows = await t.db.app.selectFrom('job_deliveries').select(['id', 'status', 'attempts']).where('id', 'in', jobs.map((j) => j.deliveryId)).execute();
    for (const r of rows) expect(r).toMatchObject(r.id === jobs[1]!.deliveryId ? { status: 'pending', attempts: 1 } : { status: 'done', attempts: 1 });
    victimId = '';
    expect(await processor([jobs[1]!])).toEqual([{}]);
    expect((await countEffects(t.db.owner)).get(`test.safe_one/${jobs[1]!.event.id}`)).toBe(1);
  });

  it('a slow handler gets small transactions that run side by side', async () => {
    let active = 0;
    let peak = 0;
    const txids = new Set<string>();
    registry.subscribe('test.slow', 'test.slow_one', async (_event, { trx }) => {
      active++;
      peak = Math.max(peak, active);
      txids.add((await sql<{ txid: string }>`select txid_current()::text as txid`.execute(trx)).rows[0]!.txid);
      await new Promise((r) => setTimeout(r, 40));
      active--;
    });
    const slow = async (n: number) => {
      for (let i = 0; i < n; i++) await t.db.withTenant(TENANT_A, (trx) => addToOutbox(trx, { name: 'test.slow', tenantId: TENANT_A, payload: {} }));
      let jobs: DeliveryJob[] = [];
      await relayOnce(t.db, registry, async (j) => void (jobs = j), 3_600_000);
      return jobs;
    };
    const processor = createProcessor(t.db, registry, logger, { concurrency: 4 });
    await processor(await slow(1)); // learns the handler takes ~40 ms
    txids.clear();
    const outcomes = await processor(await slow(8));
    expect(outcomes).toEqual(Array.from({ length: 8 }, () => ({})));
    // ~200 ms of handler time per transaction: at most 5 deliveries each, so not one transaction of 320 ms.
    expect(txids.size).toBeGreaterThanOrEqual(2);
    if (t.db.kind === 'postgres') expect(peak).toBeGreaterThan(1); // PGlite has one connection
  });

  it('the in-process transport leaves a held consumer\'s jobs queued, in order, and takes them when the hold lapses', async () => {
    let heldUntil = Date.now() + 300;
    const transport = createInProcessTransport({ concurrency: 2, logger, heldFor: (c) => (c === 'test.bg' ? Math.max(0, heldUntil - Date.now()) : 0) });
    const ran: Array<{ consumer: string; at: number }> = [];
    await transport.start(['test.bg', 'test.fg'], async (jobs) => {
      for (const j of jobs) ran.push({ consumer: j.consumer, at: Date.now() });
      return jobs.map(() => ({}));
    });
    const [row] = (await sql<OutboxRow>`select id, tenant_id, name, payload, request_id, traceparent, occurred_at from outbox limit 1`.execute(t.db.app)).rows;
    const event = toEnvelope(row!);
    const started = Date.now();
    await transport.dispatch([
      { deliveryId: newId(), consumer: 'test.bg', event },
      { deliveryId: newId(), consumer: 'test.fg', event },
    ]);
    await new Promise((r) => setTimeout(r, 100));
    expect(ran.map((r) => r.consumer)).toEqual(['test.fg']);
    expect((await transport.inspect(['test.bg']))[0]).toMatchObject({ waiting: 1, delayed: 0 });
    await new Promise((r) => setTimeout(r, 400));
    expect(ran.map((r) => r.consumer)).toEqual(['test.fg', 'test.bg']);
    expect(ran[1]!.at - started).toBeGreaterThanOrEqual(290);
    heldUntil = 0;
    await transport.stop();
  });

  it('a hold episode is capped and followed by a cooldown, so background work is never starved', () => {
    let clock = 1_000_000;
    const reg = createRegistry({ maxHoldMs: 10_000, now: () => clock });
    reg.holdBackground(2_000);
    expect(reg.backgroundHeldMs()).toBe(2_000);
    // Renewed every second for 15 s: held at most 10 s from the episode's start.
    for (let i = 0; i < 15; i++) {
      clock += 1_000;
      reg.holdBackground(2_000);
    }
    expect(reg.backgroundHeldMs()).toBe(0);
    // The cooldown: as long as the episode (10 s) without holds.
    clock += 4_000;
    reg.holdBackground(2_000);
    expect(reg.backgroundHeldMs()).toBe(0);
    clock += 2_000;
    reg.holdBackground(2_000);
    expect(reg.backgroundHeldMs()).toBe(2_000);
    // holdBackground(0) releases at once (the run is done); the episode goes on if renewed soon after.
    reg.holdBackground(0);
    expect(reg.backgroundHeldMs()).toBe(0);
    clock += 100;
    reg.holdBackground(2_000);
    expect(reg.backgroundHeldMs()).toBe(2_000);
    // 0 turns holding off.
    const off = createRegistry({ maxHoldMs: 0, now: () => clock });
    off.holdBackground(2_000);
    expect(off.backgroundHeldMs()).toBe(0);
  });

  it('a consumer without a handler here is left for another process', async () => {
    const [row] = (await sql<OutboxRow>`select id, tenant_id, name, payload, request_id, traceparent, occurred_at from outbox limit 1`.execute(t.db.app)).rows;
    const outcomes = await createProcessor(t.db, registry, logger)([{ deliveryId: newId(), consumer: 'test.elsewhere', event: toEnvelope(row!) }]);
    expect(outcomes).toEqual([{ retryAfterMs: 60_000 }]);
  });
});
