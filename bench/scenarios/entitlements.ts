import { randomUUID } from 'node:crypto';
import pg from 'pg';
import { newId } from '../../src/platform/ids.ts';
import { createProject, createTask, signup } from '../lib/api.ts';
import { percentileSorted, round } from '../lib/stats.ts';
import { skipped, target, type BenchContext, type Scenario } from '../lib/types.ts';

/** Measured requests per side (after WARMUP each), one at a time, the sides alternating request by request. */
const REQUESTS = 20_000;
const WARMUP = 2_000;

/**
 * An org on a plan whose entitlements the hooks really evaluate: the per-org rate limit comes from the plan
 * (`api.rate`: 9,000,000 a window, never tripped, and unlike configuration's 10,000,000 so the `RateLimit-Policy`
 * header shows whose it is) and `api.requests` is a **hard** quota (far above what the run sends), so every
 * request compares the period's cached usage with it — the most work the common case does.
 * Seeded straight into the run's database (as invoice-run does): the bench has no platform admin.
 */
async function planOrg(ctx: BenchContext): Promise<{ path: string; headers: Record<string, string> }> {
  const t = await signup(ctx.client, 'entitlements');
  // Seeded before the org's first org request: that one caches its snapshot (L1 and Redis, shared by the instances).
  const db = new pg.Client({ connectionString: ctx.env.databaseUrl });
  await db.connect();
  try {
    const [productId, planId, priceId] = [newId(), newId(), newId()];
    const key = `bench-ent-${randomUUID().slice(0, 8)}`;
    const now = Date.now();
    const entitlements = { features: [], limits: { 'api.rate': 9_000_000 }, quotas: { 'api.requests': 1e12 }, enforcement: { 'api.requests': 'hard' } };
    await db.query('begin');
    await db.query(`insert into billing_products (id, key, name) values ($1, $2, 'Bench entitlements')`, [productId, key]);
    await db.query(`insert into billing_plans (id, product_id, key, name, rank, public) values ($1, $2, $3, 'Bench quota plan', 5, false)`, [planId, productId, key]);
    await db.query(`insert into billing_prices (id, plan_id, version, currency, interval, model, flat_amount, entitlements) values ($1, $2, 1, 'USD', 'month', 'flat', 1000, $3)`, [priceId, planId, JSON.stringify(entitlements)]);
    await db.query(`insert into billing_customers (tenant_id, id, currency) values ($1, $1, 'USD') on conflict (tenant_id) do nothing`, [t.orgId]);
    await db.query(
      `insert into billing_subscriptions (tenant_id, id, plan_id, price_id, status, quantity, currency, interval, anchor_at, current_period_start, current_period_end)
       values ($1, $2, $3, $4, 'active', 1, 'USD', 'month', $5, $5, $6)`,
      [t.orgId, newId(), planId, priceId, new Date(now - 86_400_000), new Date(now + 29 * 86_400_000)],
    );
    await db.query('commit');
  } finally {
    await db.end();
  }
  const projectId = await createProject(ctx.client, t);
  const taskId = await createTask(ctx.client, t, projectId, 0);
  return { path: `/v1/orgs/${t.orgId}/tasks/${taskId}`, headers: { authorization: `Bearer ${t.token}` } };
}

type Inject = (opts: { method: 'GET'; url: string; headers: Record<string, string> }) => Promise<{ statusCode: number }>;

/** One request alone: this process's CPU time (user + system, µs) from its start to its answer. */
async function oneRequest(inject: Inject, read: { path: string; headers: Record<string, string> }): Promise<{ cpuUs: number; ok: boolean }> {
  const cpu = process.cpuUsage();
  const res = await inject({ method: 'GET', url: read.path, headers: read.headers });
  const used = process.cpuUsage(cpu);
  return { cpuUs: used.user + used.system, ok: res.statusCode === 200 };
}

/**
 * E1 — what the entitlement checks add to the cached read. The cached `GET …/tasks/{id}` does not ask for an
 * entitlement itself (only creating projects, tasks and members do); what runs on every authorized org request
 * is the rate limiter's per-org policy hook (the plan's `api.rate`, billing's `rateLimitFor`) and billing's
 * API-request meter (`apiMeter.admit`: the hard `api.requests` quota check, then the in-memory count). So the
 * fair measurement is that read, by an org on a plan that has both, with and without those two hooks.
 *
 * Both apps run in THIS process (`app.inject`, no sockets), on one platform composed as `plinth start`'s is (the
 * run's database and Redis, NODE_ENV=production): the app `createApiApp` builds, and the same app with the
 * configuration's rate limits and no meter — what the composition wires without billing. Requests alternate
 * between them one at a time (ABBA, over two on/off app pairs created in symmetric order), each timed by this
 * process's CPU, and E1 is the median request's CPU with the hooks ÷ without − 1 (the middle-80 % means are
 * reported too). Two API processes taking turns (or loaded at once) could not resolve 5 % on this shared
 * 2-core machine: an A/A run of two identical instances differed by 11-30 % in CPU per request. In one
 * process, alternating request by request, both sides see the same machine. Without sockets a request costs
 * less, so the ratio is an upper bound on the share of a real one.
 */
export const entitlementOverhead: Scenario = {
  name: 'entitlement-overhead',
  title: 'Cached read with and without the per-request entitlement hooks (plan rate limit + hard API-request quota), in-process A/B',
  async run(ctx) {
    const e1 = (pct?: number) => [target('E1', 'entitlement checks add < 5 % to the cached read (CPU per request, median request, 20,000 a side, alternating)', pct, 5, '%', '<')];
    if (!ctx.client.has('GET', '/v1/orgs/{orgId}/billing/entitlements') || !ctx.client.has('GET', '/v1/orgs/{orgId}/tasks/{taskId}')) {
      return skipped(this, 'no billing entitlements or task read in this build', e1());
    }
    const read = await planOrg(ctx);
    // Loaded here, not at the bench's start: only this scenario runs the app inside the bench process.
    const { compose, createApiApp } = await import('../../src/main.ts');
    const { configRateLimits } = await import('../../src/platform/http/rate-limit.ts');
    const { platform, modules } = await compose({ env: { ...ctx.apiEnv, MIGRATE_ON_START: 'false', LOG_LEVEL: 'error', SHUTDOWN_DELAY_MS: '0' }, migrate: false });
    const withoutHooks = { ...modules, rateLimits: configRateLimits(platform.config.edge), apiMeter: undefined };
    // BENCH_E1_CONTROL=1: an A/A run, both apps without the hooks — the method's noise floor on this machine.
    const control = process.env.BENCH_E1_CONTROL === '1';
    // Four apps, created on, off, off, on, used as two pairs (the first and last, the middle two): an A/A
    // run of one pair measured the app created first +3.6 % dearer than the second (2026-12-02), a bias of
    // creation order (JIT feedback and heap layout the two instances of the same code do not share) that
    // a symmetric creation order cancels.
    const hooked = control ? withoutHooks : modules;
    const apps = { on: [await createApiApp(platform, hooked)], off: [] as Awaited<ReturnType<typeof createApiApp>>[] };
    apps.off.push(await createApiApp(platform, withoutHooks), await createApiApp(platform, withoutHooks));
    apps.on.push(await createApiApp(platform, hooked));
    const all = [...apps.on, ...apps.off];
    try {
      await Promise.all(all.map((a) => a.ready()));
      const sides = (pair: number) => ({
        on: (o: Parameters<Inject>[0]) => apps.on[pair]!.inject(o),
        off: (o: Parameters<Inject>[0]) => apps.off[pair]!.inject(o),
      });
      const probe = await apps.on[0]!.inject({ method: 'GET', url: read.path, headers: read.headers });
      if (probe.statusCode !== 200) throw new Error(`the plan org's read answered ${probe.statusCode}: ${probe.body.slice(0, 200)}`);
      const policy = String(probe.headers['ratelimit-policy'] ?? '');
      // Warm-up: JIT, route schemas, the session and entitlement caches, the quota's usage state.
      for (let i = 0; i < WARMUP; i++) for (const pair of [0, 1]) for (const side of ['on', 'off'] as const) await oneRequest(sides(pair)[side], read);
      const per = { on: [] as number[], off: [] as number[] };
      let failed = 0;
      const t0 = performance.now();
      for (let i = 0; i < REQUESTS; i++) {
        // ABBA request by request, the two app pairs taking turns: neither side always follows the other, and a
        // GC, a timer or a neighbour's burst lands on both sides alike.
        const order = Math.floor(i / 2) % 2 === 0 ? (['on', 'off'] as const) : (['off', 'on'] as const);
        const pair = sides(i % 2);
        for (const side of order) {
          const r = await oneRequest(pair[side], read);
          per[side].push(r.cpuUs);
          if (!r.ok) failed++;
        }
      }
      const seconds = (performance.now() - t0) / 1000;
      // E1: the median request's CPU time with the hooks over the median without (robust to the GCs and timers
      // that land in a few requests); the means over the middle 80 % are reported beside it. Per request, one at
      // a time, because blocks of concurrent requests (the method before 2026-12-02 05:20) measured a pair
      // spread of p25 −26 % … p75 +42 % on this machine — noise ten times the target.
      const sorted = { on: [...per.on].sort((x, y) => x - y), off: [...per.off].sort((x, y) => x - y) };
      const median = (xs: number[]) => percentileSorted(xs, 50);
      const trimmedMean = (xs: number[]) => {
        const mid = xs.slice(Math.floor(xs.length * 0.1), Math.ceil(xs.length * 0.9));
        return mid.reduce((acc, x) => acc + x, 0) / mid.length;
      };
      const a = median(sorted.on);
      const b = median(sorted.off);
      const cpuPct = round((a / b - 1) * 100, 2);
      const trimmedPct = round((trimmedMean(sorted.on) / trimmedMean(sorted.off) - 1) * 100, 2);
      const q = (xs: number[], p: number) => round(percentileSorted(xs, p), 0);
      return {
        name: this.name,
        title: this.title,
        status: failed > 0 ? 'error' : 'ok',
        ...(failed > 0 ? { reason: `${failed} reads did not answer 200` } : {}),
        endpoint: 'GET /v1/orgs/{orgId}/tasks/{taskId} (org on a plan: api.rate limit, hard api.requests quota), app.inject, hooks on vs off',
        metrics: {
          onCpuUsMedian: a,
          offCpuUsMedian: b,
          cpuCostPctMedian: cpuPct,
          cpuCostPctTrimmedMean: trimmedPct,
          hooksUsMedian: round(a - b, 1),
          // Each side's spread (µs): the hooks shift the distribution; noise widens both alike.
          onCpuUs: `p10 ${q(sorted.on, 10)} · p25 ${q(sorted.on, 25)} · p75 ${q(sorted.on, 75)} · p90 ${q(sorted.on, 90)}`,
          offCpuUs: `p10 ${q(sorted.off, 10)} · p25 ${q(sorted.off, 25)} · p75 ${q(sorted.off, 75)} · p90 ${q(sorted.off, 90)}`,
          requestsPerSide: REQUESTS,
          requestsPerSec: round((2 * REQUESTS) / seconds, 1),
          rateLimitPolicyOn: policy,
          control: control ? 'A/A: neither app has the hooks' : 'no',
        },
        targets: e1(failed > 0 ? undefined : cpuPct),
      };
    } finally {
      for (const a of all) await a.close();
      await platform.lifecycle.shutdown('bench');
    }
  },
};
