import { hasRoute } from '../lib/api.ts';
import { runLoad } from '../lib/load.ts';
import { round } from '../lib/stats.ts';
import { skipped, target, type BenchContext, type Scenario, type ScenarioResult } from '../lib/types.ts';
import { ensureTasks, ensureTenant, pickCachedRead } from './fixtures.ts';

export function ratioTo(ctx: BenchContext, baseline: 'hello' | 'select' | 'insert', okPerSec: number): number | undefined {
  const b = ctx.baselines[baseline];
  return b?.status === 'ok' && b.okPerSec ? round(okPerSec / b.okPerSec, 3) : undefined;
}

export const cachedRead: Scenario = {
  name: 'cached-read',
  title: 'Authenticated cached read (one resource, closed loop)',
  baseline: 'hello',
  async run(ctx) {
    const pick = await pickCachedRead(ctx);
    if (!pick) return skipped(this, 'identity (signup + an authenticated GET) not available', [target('P1', 'cached read ≥ 0.60× hello', undefined, 0.6, '×', '>=')]);
    await runLoad({ baseUrl: ctx.api.baseUrl, serverPid: ctx.api.pid, request: pick.request, durationSec: 1, connections: ctx.opts.connections });
    const load = await runLoad({ baseUrl: ctx.api.baseUrl, serverPid: ctx.api.pid, request: pick.request, durationSec: ctx.opts.durationSec, connections: ctx.opts.connections });
    const ratio = ratioTo(ctx, 'hello', load.okPerSec);
    return {
      name: this.name, title: this.title, status: 'ok', endpoint: pick.endpoint, load, baseline: 'hello', ratio,
      targets: [target('P1', 'cached read ≥ 0.60× hello', ratio, 0.6, '×', '>=')],
    };
  },
};

/**
 * Uncached: every request reads a task this run has not read before (ids walked once in shuffled
 * order), so a read-through cache can only miss. If the run outpaces the number of tasks, the walk
 * wraps around and the repeat share is reported.
 */
export const uncachedRead: Scenario = {
  name: 'uncached-read',
  title: 'Uncached tenant-scoped read (distinct task per request)',
  baseline: 'select',
  async run(ctx) {
    const p2 = (r?: number) => [target('P2', 'uncached read ≥ 0.85× naive pg select', r, 0.85, '×', '>=')];
    if (!hasRoute(ctx.client, 'signup') || !hasRoute(ctx.client, 'getTask') || !hasRoute(ctx.client, 'createTask')) {
      return skipped(this, 'projects (task create + GET task by id) not available', p2());
    }
    const t = await ensureTenant(ctx);
    const want = Number(process.env.BENCH_UNCACHED_TASKS ?? 5000);
    const ids = [...(await ensureTasks(ctx, want))].sort(() => Math.random() - 0.5);
    let i = 0;
    const request = {
      path: () => `/v1/orgs/${t.orgId}/tasks/${ids[i++ % ids.length]}`,
      headers: { authorization: `Bearer ${t.token}` },
    };
    const load = await runLoad({ baseUrl: ctx.api.baseUrl, serverPid: ctx.api.pid, request, durationSec: ctx.opts.durationSec, connections: ctx.opts.connections });
    const ratio = ratioTo(ctx, 'select', load.okPerSec);
    const repeats = Math.max(0, load.requests - ids.length);
    return {
      name: this.name, title: this.title, status: 'ok', endpoint: 'GET /v1/orgs/{orgId}/tasks/{taskId}', load, baseline: 'select', ratio,
      metrics: { distinctTasks: ids.length, repeatShare: round(repeats / Math.max(1, load.requests), 3) },
      targets: p2(ratio),
    };
  },
};

/** Many clients on one resource: contention on one row/cache key, not spread across the data. */
export const hotEndpoint: Scenario = {
  name: 'hot-endpoint',
  title: 'Hot endpoint (200 connections on one resource)',
  baseline: 'hello',
  async run(ctx): Promise<ScenarioResult> {
    const pick = await pickCachedRead(ctx);
    if (!pick) return skipped(this, 'identity (signup + an authenticated GET) not available');
    const load = await runLoad({ baseUrl: ctx.api.baseUrl, serverPid: ctx.api.pid, request: pick.request, durationSec: ctx.opts.durationSec, connections: 200 });
    return {
      name: this.name, title: this.title, status: 'ok', endpoint: pick.endpoint, load, baseline: 'hello',
      ratio: ratioTo(ctx, 'hello', load.okPerSec),
      metrics: { connections: 200, non2xx: load.requests - (load.statuses['200'] ?? 0) },
      targets: [],
    };
  },
};
