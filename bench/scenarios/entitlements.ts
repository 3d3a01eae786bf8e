import { randomUUID } from 'node:crypto';
import pg from 'pg';
import { newId } from '../../src/platform/ids.ts';
import { createProject, createTask, signup } from '../lib/api.ts';
import { apiCommand } from '../lib/build.ts';
import { processCpuUs, runLoad, type LoadResult } from '../lib/load.ts';
import { sleep, startNode, type Child } from '../lib/processes.ts';
import { round } from '../lib/stats.ts';
import { skipped, target, type BenchContext, type Scenario } from '../lib/types.ts';

/** Alternating rounds per instance: on, off, on, off, … so a change of the machine's load hits both sides alike. */
const ROUNDS = 3;

/**
 * An org on a plan whose entitlements the hooks really evaluate: the per-org rate limit comes from the plan
 * (`api.rate`: 9,000,000 a window, never tripped, and unlike configuration's 10,000,000 so the `RateLimit-Policy` header shows whose it is) and `api.requests` is a **hard** quota (far above what the run
 * sends), so every request compares the period's cached usage with it — the most work the common case does.
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

const instance = (ctx: BenchContext, name: string, hooks: boolean) => {
  const cmd = apiCommand(ctx.opts.api);
  // --cpu-prof profiles these instances too (one file each, written when they stop): where the difference is.
  const prof = ctx.opts.cpuProfDir ? ['--cpu-prof', `--cpu-prof-dir=${ctx.opts.cpuProfDir}`, `--cpu-prof-name=${name}.cpuprofile`] : [];
  return startNode({
    name,
    ...cmd,
    args: [...prof, ...cmd.args],
    // Two identical API-role instances on the run's migrated database and Redis; only the switch differs.
    env: { ...ctx.apiEnv, PLINTH_ROLE: 'api', MIGRATE_ON_START: 'false', SHUTDOWN_DELAY_MS: '0', SHUTDOWN_GRACE_MS: '2000', ENTITLEMENT_HOOKS_ENABLED: String(hooks) },
    readyPath: '/readyz',
    readyTimeoutMs: 60_000,
  });
};

/**
 * Waits until an instance is quiet (under 2 % of a core over half a second; at most 30 s): a fresh instance
 * compiles its remaining route schemas in the background after it is ready, and that CPU time — seconds on
 * a loaded machine — would otherwise be counted against whichever side's rounds it overlaps (an A/A run of
 * two identical instances without this differed by 30 % in CPU per request).
 */
async function settle(api: Child): Promise<void> {
  const until = Date.now() + 30_000;
  let last = processCpuUs(api.pid);
  while (last !== undefined && Date.now() < until) {
    await sleep(500);
    const now = processCpuUs(api.pid);
    if (now === undefined || now - last < 10_000) return;
    last = now;
  }
}

/** Sums of alternating rounds: throughput over the whole time, CPU per request, the latency percentiles of the last round. */
function total(rounds: LoadResult[]) {
  const ok = rounds.reduce((a, r) => a + r.okPerSec * r.durationSec, 0);
  const sec = rounds.reduce((a, r) => a + r.durationSec, 0);
  const cpu = rounds.map((r) => (r.serverCpuUsPerRequest ?? NaN) * r.okPerSec * r.durationSec).reduce((a, b) => a + b, 0);
  return { okPerSec: round(ok / sec, 1), cpuUsPerRequest: round(cpu / ok, 1), p99Ms: round(Math.max(...rounds.map((r) => r.okLatencyMs.p99)), 2) };
}

/**
 * E1 — what the entitlement checks add to the cached read. The cached `GET …/tasks/{id}` does not ask for an
 * entitlement itself (only creating projects, tasks and members do); what runs on every authorized org request
 * is the rate limiter's per-org policy hook (the plan's `api.rate`, billing's `rateLimitFor`) and billing's
 * API-request meter (`apiMeter.admit`: the hard `api.requests` quota check, then the in-memory count). So the
 * fair measurement is that read, by an org on a plan that has both, on two otherwise identical API instances:
 * one with the hooks, one with `ENTITLEMENT_HOOKS_ENABLED=false` (a switch that exists only for this). Closed
 * loop, the rounds alternate between the instances (and which goes first). E1 is what the hooks add to the
 * API's CPU time per request (on ÷ off − 1, over all rounds): on this shared 2-core machine a round's
 * throughput swings several-fold with the other tenants' load (first runs: 100 to 1,400 req/s for the same
 * instance), its CPU per request much less. The throughput cost (1 − on ÷ off) and both p99s are reported too.
 */
export const entitlementOverhead: Scenario = {
  name: 'entitlement-overhead',
  title: 'Cached read with and without the per-request entitlement hooks (plan rate limit + hard API-request quota)',
  async run(ctx) {
    const e1 = (pct?: number) => [target('E1', 'entitlement checks add < 5 % to the cached read (API CPU per request)', pct, 5, '%', '<')];
    if (!ctx.client.has('GET', '/v1/orgs/{orgId}/billing/entitlements') || !ctx.client.has('GET', '/v1/orgs/{orgId}/tasks/{taskId}')) {
      return skipped(this, 'no billing entitlements or task read in this build', e1());
    }
    const read = await planOrg(ctx);
    const started: Child[] = [];
    try {
      const on = await instance(ctx, 'entitlements-on', true);
      started.push(on);
      const off = await instance(ctx, 'entitlements-off', false);
      started.push(off);
      const load = (api: Child, durationSec: number) =>
        runLoad({ baseUrl: api.baseUrl, serverPid: api.pid, request: read, durationSec, connections: ctx.opts.connections });
      // Warm-up, alternating too: JIT, the route schemas a fresh instance compiles in the background after it
      // starts, the session and entitlement caches, the quota's usage state.
      for (const api of [on, off]) await settle(api);
      for (let i = 0; i < 2; i++) for (const api of [on, off]) await load(api, 2);
      for (const api of [on, off]) await settle(api);
      const check = await fetch(`${on.baseUrl}${read.path}`, { headers: read.headers });
      const policy = check.headers.get('ratelimit-policy') ?? '';
      const per = Math.max(1, Math.round(ctx.opts.durationSec / 2));
      const rounds: { on: LoadResult[]; off: LoadResult[] } = { on: [], off: [] };
      for (let i = 0; i < ROUNDS; i++) {
        // Which side goes first alternates too: neither always follows the other's load.
        const order = i % 2 === 0 ? (['on', 'off'] as const) : (['off', 'on'] as const);
        for (const side of order) rounds[side].push(await load(side === 'on' ? on : off, per));
      }
      const a = total(rounds.on);
      const b = total(rounds.off);
      const throughputPct = b.okPerSec > 0 ? round((1 - a.okPerSec / b.okPerSec) * 100, 2) : undefined;
      const cpuPct = Number.isFinite(a.cpuUsPerRequest / b.cpuUsPerRequest) ? round((a.cpuUsPerRequest / b.cpuUsPerRequest - 1) * 100, 2) : undefined;
      return {
        name: this.name,
        title: this.title,
        status: 'ok',
        endpoint: 'GET /v1/orgs/{orgId}/tasks/{taskId} (org on a plan: api.rate limit, hard api.requests quota), hooks on vs off',
        load: rounds.on[rounds.on.length - 1],
        phases: Object.fromEntries([...rounds.on.map((r, i) => [`on${i + 1}`, r]), ...rounds.off.map((r, i) => [`off${i + 1}`, r])]),
        metrics: {
          onPerSec: a.okPerSec,
          offPerSec: b.okPerSec,
          throughputCostPct: throughputPct ?? 'n/a',
          onCpuUsPerRequest: a.cpuUsPerRequest,
          offCpuUsPerRequest: b.cpuUsPerRequest,
          cpuCostPct: cpuPct ?? 'n/a',
          onP99Ms: a.p99Ms,
          offP99Ms: b.p99Ms,
          rateLimitPolicyOn: policy,
          rounds: ROUNDS,
          secondsPerRound: per,
        },
        targets: e1(cpuPct),
      };
    } finally {
      for (const c of started) await c.stop('SIGTERM', 5_000);
    }
  },
};
