import { fork, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import { fileURLToPath } from 'node:url';
import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { signup } from '../../../test/helpers/auth.ts';
import { bundleForNode } from '../../../test/helpers/bundle.ts';
import { adminAndMember, waitFor } from '../../../test/helpers/jobs.ts';
import { createTestPlatform, type TestPlatform } from '../../../test/helpers/test-platform.ts';

const WORKER = fileURLToPath(new URL('../../../test/fixtures/billing/consistency-worker.ts', import.meta.url));
const APP_NAME = 'plinth-consistency-worker';
const METRIC = 'tokens';
const QUOTA = 400;
const THRESHOLDS = [80, 100];
const ORGS = 4;
/** Kill rounds: at least MIN_ROUNDS, more (up to MAX_ROUNDS) until the driver has done enough on a slow machine. */
const MIN_ROUNDS = Number(process.env.CONSISTENCY_ROUNDS ?? 4);
const MAX_ROUNDS = MIN_ROUNDS * 2;
const SUB_EVENTS = ['billing.subscription_created', 'billing.subscription_updated', 'billing.subscription_canceled'];

/**
 * Crash consistency of the billing loop (real Postgres, real worker processes). A worker process (the
 * worker role plus a driver: plan changes, pause/resume, add-ons, test clock moves
 * through trial ends and renewals, usage batches with duplicate keys and late timestamps, quota thresholds)
 * is killed -9 several times mid-change, and while it runs every connection it has to the test database is
 * terminated (`pg_terminate_backend`) again and again, mid-transaction. A last worker drains the outbox.
 * Then: every subscription version has exactly one subscription event, every entitlements version exactly
 * one `entitlements_changed`, the (cached) entitlement snapshot is what the plan and add-ons grant, the
 * rollups are the raw events' sums, and each quota mark of a period is crossed exactly once.
 */
describe.skipIf(!process.env.TEST_DATABASE_URL)('billing consistency: worker killed -9 and database connections terminated mid-change', () => {
  let tp: TestPlatform;
  let worker: string;
  let dbName: string;
  const children: ChildProcess[] = [];

  beforeAll(async () => {
    worker = await bundleForNode(WORKER);
    tp = await createTestPlatform({ env: { CACHE_L1_TTL_MS: '600000' } });
    dbName = new URL(tp.testDb.url!).pathname.slice(1);
  }, 60_000);
  afterAll(async () => {
    for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
    await tp?.close();
    if (worker) fs.rmSync(worker, { force: true });
  });

  const spawn = (drive: boolean, spec: object) => {
    const child = fork(worker, [], {
      execArgv: [],
      stdio: ['ignore', 'ignore', 'inherit', 'ipc'],
      env: {
        ...process.env,
        NODE_ENV: 'test',
        LOG_LEVEL: 'fatal',
        PGAPPNAME: APP_NAME,
        DATABASE_URL: tp.testDb.url,
        REDIS_URL: process.env.TEST_REDIS_URL ?? '',
        REDIS_PREFIX: tp.config.redisPrefix,
        CACHE_L1_TTL_MS: '600000',
        JOBS_POLL_MS: '20',
        JOBS_SWEEP_AFTER_MS: '1000',
        DATABASE_POOL_MAX: '6',
        CONSISTENCY_DRIVE: drive ? '1' : '0',
        CONSISTENCY_SPEC: JSON.stringify(spec),
      },
    });
    children.push(child);
    const stats: { last: Record<string, number> } = { last: {} };
    child.on('message', (m: { stats?: Record<string, number> }) => {
      if (m && typeof m === 'object' && m.stats) stats.last = { ...m.stats };
    });
    const ready = new Promise<void>((resolve, reject) => {
      child.once('message', () => resolve());
      child.once('exit', (code, signal) => reject(new Error(`worker exited before ready (${code ?? signal})`)));
    });
    return { child, ready, stats };
  };
  const exited = (p: ChildProcess) => new Promise<void>((resolve) => (p.exitCode !== null || p.signalCode !== null ? resolve() : p.once('exit', () => resolve())));
  const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

  /** The worker's connections to the test database: how many are inside a transaction, then all terminated. */
  async function terminateWorkerBackends(): Promise<{ total: number; inTransaction: number }> {
    const r = await sql<{ total: number; in_tx: number }>`
      select count(*)::int as total, count(*) filter (where xact_start is not null)::int as in_tx,
             count(pg_terminate_backend(pid)) as n
      from pg_stat_activity where datname = ${dbName} and application_name = ${APP_NAME}`.execute(tp.db.owner);
    return { total: r.rows[0]!.total, inTransaction: r.rows[0]!.in_tx };
  }
  async function openWorkerTransactions(): Promise<number> {
    const r = await sql<{ n: number }>`select count(*)::int as n from pg_stat_activity where datname = ${dbName} and application_name = ${APP_NAME} and xact_start is not null`.execute(tp.db.owner);
    return r.rows[0]!.n;
  }

  it('subscriptions, entitlements and usage agree after the crashes', async () => {
    const inject = async (method: string, url: string, headers: object, payload?: object) => {
      const res = await tp.app.inject({ method: method as 'GET', url, headers: headers as Record<string, string>, ...(payload ? { payload } : {}) });
      if (res.statusCode >= 300) throw new Error(`${method} ${url}: ${res.statusCode} ${res.body}`);
      return res.json();
    };
    // Catalog: every plan (the default one too) has the same quota on the metric, so each crossing is defined by usage alone.
    const { admin } = await adminAndMember(tp);
    const product = await inject('POST', '/v1/admin/billing/products', admin, { key: 'plinth', name: 'Plinth' });
    await inject('POST', '/v1/admin/billing/meters', admin, { key: METRIC, name: 'Tokens', aggregation: 'sum', property: null });
    const plan = async (key: string, rank: number, extra: object, entitlements: object) => {
      const p = await inject('POST', '/v1/admin/billing/plans', admin, { productId: product.id, key, name: key, rank, ...extra });
      await inject('POST', `/v1/admin/billing/plans/${p.id}/prices`, admin, { currency: 'USD', interval: 'month', model: 'flat', flatAmount: 0, ...entitlements });
      return p.id as string;
    };
    await plan('free', 0, { isDefault: true }, { entitlements: { features: [], limits: { projects: 1 }, quotas: { [METRIC]: QUOTA } } });
    const basic = await plan('basic', 1, {}, { trialDays: 2, entitlements: { features: ['exports'], limits: { projects: 5 }, quotas: { [METRIC]: QUOTA } } });
    const pro = await plan('pro', 2, { upgradeTiming: 'now', downgradeTiming: 'period_end' }, { entitlements: { features: ['exports', 'sso'], limits: { projects: 20 }, quotas: { [METRIC]: QUOTA } } });
    const addon = await inject('POST', '/v1/admin/billing/addons', admin, { key: 'projects-pack', name: 'Projects pack', currency: 'USD', interval: 'month', amount: 0, entitlements: { features: ['pack'], limits: { projects: 10 } } });

    const orgs: string[] = [];
    for (let i = 0; i < ORGS; i++) {
      const o = await signup(tp.app);
      await inject('POST', `/v1/orgs/${o.orgId}/billing/test-clock`, o.auth, { frozenTime: new Date(Date.now() + 60_000).toISOString() });
      await inject('POST', `/v1/orgs/${o.orgId}/billing/subscription`, o.auth, { planId: basic });
      orgs.push(o.orgId);
      // Warm this process's cache: with Redis, only the workers' invalidations can make it see later changes.
      await tp.modules.billing.entitlements(o.orgId);
    }
    const spec = { orgs, plans: [basic, pro], addonId: addon.id, metric: METRIC, keySpace: 5000 };

    // Chaos: each round a driving worker runs while its connections are terminated every 0.7-1.7 s, then it is killed -9.
    let terminations = 0;
    let terminatedInTx = 0;
    let killsMidTx = 0;
    const driven: Record<string, number> = {};
    let rounds = 0;
    const done = (k: string) => Object.entries(driven).filter(([key]) => key.startsWith(k)).reduce((a, [, v]) => a + v, 0);
    for (let round = 0; round < MAX_ROUNDS; round++) {
      if (round >= MIN_ROUNDS && done('ok:ingest') >= 40 && done('ok:plan') + done('ok:pause') + done('ok:clock') >= 2 * ORGS) break;
      rounds++;
      const { child, ready, stats } = spawn(true, spec);
      const t0 = Date.now();
      await ready;
      console.info(`round ${round}: worker ready in ${Date.now() - t0} ms`);
      // Chaos once the driver is at work: its connections terminated every 0.7-1.7 s until it has done 12
      // things this round (or 20 s passed: the machine may be slow), then kill -9 at a random moment.
      const okNow = () => Object.entries(stats.last).filter(([k]) => k.startsWith('ok:')).reduce((n, [, v]) => n + v, 0);
      const deadline = Date.now() + 20_000;
      while (okNow() === 0 && Date.now() < deadline) await sleep(100);
      while (okNow() < 12 && Date.now() < deadline) {
        await sleep(700 + Math.random() * 1000);
        const t = await terminateWorkerBackends();
        terminations += t.total;
        terminatedInTx += t.inTransaction;
      }
      await sleep(50 + Math.random() * 300);
      // Kill inside a transaction when one opens within 2 s: the worker batches deliveries across tenants, so
      // it holds fewer (longer) transactions and a kill at a random moment can miss them all.
      const until = Date.now() + 2_000;
      while (Date.now() < until && (await openWorkerTransactions()) === 0) await sleep(5);
      if ((await openWorkerTransactions()) > 0) killsMidTx++;
      child.kill('SIGKILL');
      await exited(child);
      for (const [k, v] of Object.entries(stats.last)) driven[k] = (driven[k] ?? 0) + v;
    }
    console.info('driver:', JSON.stringify(driven));
    expect(terminatedInTx).toBeGreaterThan(0);
    expect(killsMidTx).toBeGreaterThan(0);

    // Drain: a worker that only relays and handles, until nothing is pending.
    const { child: drainer, ready } = spawn(false, spec);
    await ready;
    const drainStart = Date.now();
    await waitFor(
      async () => (await sql<{ n: number }>`select ((select count(*) from outbox where relayed_at is null) + (select count(*) from job_deliveries where status = 'pending'))::int as n`.execute(tp.db.owner)).rows[0]!.n,
      (n) => n === 0,
      240_000,
      200,
    );
    console.info(`drained in ${Date.now() - drainStart} ms`);
    drainer.kill('SIGTERM');
    await exited(drainer);
    const q = async <T,>(query: ReturnType<typeof sql<T>>) => (await query.execute(tp.db.owner)).rows;

    // 1. One subscription event per subscription version (created = 1, each change +1), none for no change.
    const subs = await q(sql<{ tenant_id: string; id: string; version: number; versions: number[] | null }>`
      select s.tenant_id, s.id, s.version,
             array_agg((o.payload->>'version')::int order by (o.payload->>'version')::int) filter (where o.id is not null) as versions
      from billing_subscriptions s
      left join outbox o on o.tenant_id = s.tenant_id and o.name in (${sql.join(SUB_EVENTS)}) and o.payload->>'subscriptionId' = s.id::text
      group by 1, 2, 3`);
    expect(subs).toHaveLength(ORGS);
    for (const s of subs) expect(s.versions, `subscription ${s.id}`).toEqual(Array.from({ length: s.version }, (_, i) => i + 1));
    const orphans = await q(sql<{ n: number }>`select count(*)::int as n from outbox o where o.name in (${sql.join(SUB_EVENTS)})
      and not exists (select 1 from billing_subscriptions s where s.tenant_id = o.tenant_id and s.id::text = o.payload->>'subscriptionId')`);
    expect(orphans[0]!.n).toBe(0);
    const changes = subs.reduce((a, s) => a + s.version - 1, 0);
    expect(changes).toBeGreaterThanOrEqual(ORGS); // the driver did change things

    // 2. One entitlements_changed per entitlements version; the snapshot served (through this process's cache) is what the plan and add-ons grant.
    const ents = await q(sql<{ tenant_id: string; entitlements_version: string; versions: number[] | null }>`
      select c.tenant_id, c.entitlements_version,
             array_agg((o.payload->>'version')::int order by (o.payload->>'version')::int) filter (where o.id is not null) as versions
      from billing_customers c left join outbox o on o.tenant_id = c.tenant_id and o.name = 'billing.entitlements_changed'
      where c.tenant_id in (${sql.join(orgs)}) group by 1, 2`);
    for (const e of ents) expect(e.versions ?? [], `org ${e.tenant_id}`).toEqual(Array.from({ length: Number(e.entitlements_version) - 1 }, (_, i) => i + 2));
    for (const orgId of orgs) {
      const [row] = await q(sql<{ status: string | null; plan_id: string; entitlements: any; addon_projects: number; addon_features: string[] | null; version: string }>`
        select s.status, coalesce(case when s.status in ('trialing', 'active', 'past_due') then s.plan_id end, (select id from billing_plans where is_default)) as plan_id,
               (select p.entitlements from billing_prices p where p.id = case when s.status in ('trialing', 'active', 'past_due') then s.price_id end
                  or (s.status not in ('trialing', 'active', 'past_due') and p.plan_id = (select id from billing_plans where is_default))
                order by p.version desc limit 1) as entitlements,
               coalesce((select sum(a.quantity * coalesce((d.entitlements->'limits'->>'projects')::int, 0)) from billing_subscription_addons a join billing_addons d on d.id = a.addon_id
                         where a.tenant_id = s.tenant_id and a.subscription_id = s.id and a.removed_at is null and s.status in ('trialing', 'active', 'past_due')), 0)::int as addon_projects,
               (select array_agg(distinct f) from billing_subscription_addons a join billing_addons d on d.id = a.addon_id, jsonb_array_elements_text(d.entitlements->'features') f
                 where a.tenant_id = s.tenant_id and a.subscription_id = s.id and a.removed_at is null and a.quantity > 0 and s.status in ('trialing', 'active', 'past_due')) as addon_features,
               c.entitlements_version as version
        from billing_customers c left join billing_subscriptions s on s.tenant_id = c.tenant_id and s.status <> 'canceled'
        where c.tenant_id = ${orgId}`);
      const snapshot = await tp.modules.billing.entitlements(orgId);
      const features = [...new Set([...row!.entitlements.features, ...(row!.addon_features ?? [])])].sort();
      expect({ version: snapshot.version, plan: snapshot.plan?.id, features: [...snapshot.features].sort(), limits: snapshot.limits, quotas: snapshot.quotas }, `org ${orgId}`).toEqual({
        version: Number(row!.version),
        plan: row!.plan_id,
        features,
        limits: { projects: row!.entitlements.limits.projects + row!.addon_projects },
        quotas: { [METRIC]: QUOTA },
      });
    }

    // 3. Rollups are exactly the raw events (none counted twice, none lost), per org, metric and hour.
    const drift = await q(sql<{ n: number }>`
      with raw as (
        select tenant_id, metric, date_trunc('hour', occurred_at, 'UTC') as bucket, count(*)::bigint as count, sum(value) as sum, max(value) as max
        from billing_usage_events group by 1, 2, 3)
      select count(*)::int as n from raw full join billing_usage_rollups r using (tenant_id, metric, bucket)
      where r.count is distinct from raw.count or r.sum is distinct from raw.sum or r.max is distinct from raw.max`);
    expect(drift[0]!.n).toBe(0);
    const usageEvents = await q(sql<{ n: number }>`select count(*)::int as n from billing_usage_events where metric = ${METRIC}`);
    expect(usageEvents[0]!.n).toBeGreaterThan(50);

    // 4. Thresholds: never twice for one period; in each org's current period, exactly once per mark reached.
    const dup = await q(sql<{ n: number }>`select count(*)::int as n from (select 1 from outbox where name = 'billing.usage_threshold_crossed'
      group by tenant_id, payload->>'metric', payload->>'periodStart', payload->>'threshold' having count(*) > 1) d`);
    expect(dup[0]!.n).toBe(0);
    let checkedPeriods = 0;
    let marksReached = 0;
    for (const orgId of orgs) {
      const [p] = await q(sql<{ period_start: Date | null }>`
        select date_trunc('hour', current_period_start, 'UTC') as period_start from billing_subscriptions where tenant_id = ${orgId} and status <> 'canceled'`);
      // (An org without a live subscription would count its month from the 1st, overlapping the old period's
      // key: only "never twice" is defined there. The driver does not cancel.)
      if (!p?.period_start) continue;
      checkedPeriods++;
      const start = new Date(p.period_start);
      const [u] = await q(sql<{ usage: string | null }>`select sum(value) as usage from billing_usage_events where tenant_id = ${orgId} and metric = ${METRIC} and occurred_at >= ${start}`);
      const usage = Number(u?.usage ?? 0);
      for (const threshold of THRESHOLDS) {
        const [n] = await q(sql<{ n: number }>`select count(*)::int as n from outbox where tenant_id = ${orgId} and name = 'billing.usage_threshold_crossed'
          and payload->>'metric' = ${METRIC} and (payload->>'periodStart')::timestamptz = ${start} and (payload->>'threshold')::int = ${threshold}`);
        const reached = usage >= (QUOTA * threshold) / 100;
        if (reached) marksReached++;
        expect(n!.n, `org ${orgId} period ${start.toISOString()} usage ${usage} threshold ${threshold}`).toBe(reached ? 1 : 0);
      }
    }
    expect(checkedPeriods).toBeGreaterThan(0);
    const crossings = await q(sql<{ n: number }>`select count(*)::int as n from outbox where name = 'billing.usage_threshold_crossed'`);
    expect(crossings[0]!.n).toBeGreaterThan(0);
    console.info(
      `consistency: ${rounds} kills (${killsMidTx} with a transaction open), ${terminations} backends terminated (${terminatedInTx} mid-transaction), ` +
        `${changes} subscription changes, ${usageEvents[0]!.n} usage events, ${crossings[0]!.n} threshold crossings, ${checkedPeriods} current periods checked (${marksReached} marks reached)`,
    );
  }, 600_000);
});
