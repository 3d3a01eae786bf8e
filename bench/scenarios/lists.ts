import { hasRoute } from '../lib/api.ts';
import { runLoad, type LoadResult } from '../lib/load.ts';
import { round } from '../lib/stats.ts';
import { skipped, target, type BenchContext, type Scenario } from '../lib/types.ts';
import { findExport } from '../lib/find-export.ts';
import { ensureProject, ensureTasks, seedInto } from './fixtures.ts';

async function measure(ctx: BenchContext, kind: 'list' | 'search'): Promise<LoadResult> {
  const t = ctx.fixtures.tenant!;
  const projectId = ctx.fixtures.projectId!;
  const words = ['billing', 'login', 'export', 'latency', 'bench'];
  let i = 0;
  const request = {
    path: () =>
      kind === 'list'
        ? `/v1/orgs/${t.orgId}/projects/${projectId}/tasks?limit=25&status=todo`
        : `/v1/orgs/${t.orgId}/projects/${projectId}/tasks?limit=25&q=${words[i++ % words.length]}`,
    headers: { authorization: `Bearer ${t.token}` },
  };
  // Few connections: P4 is about query cost as the table grows, not about queueing behind 50 clients.
  return runLoad({ baseUrl: ctx.api.baseUrl, request, durationSec: ctx.opts.durationSec, connections: Math.min(ctx.opts.connections, LIST_CONNECTIONS) });
}

const LIST_CONNECTIONS = 10;

/** p95 of the 2xx answers; undefined when a phase had failures (a fast 503 is not a fast list). */
function okP95(r: LoadResult): number | undefined {
  const ok = Object.entries(r.statuses).filter(([s]) => s.startsWith('2')).reduce((a, [, n]) => a + n, 0);
  return ok > 0 && ok === r.requests ? r.okLatencyMs.p95 : undefined;
}

/**
 * List (first page, status filter) and full-text search at 10^4 tasks, then at 10^6 when --large is
 * given (seeding 10^6 takes minutes on two cores, so it is opt-in). P4 compares their p95.
 */
export const listSearch: Scenario = {
  name: 'list-search',
  title: 'List and search at 10^4 (and, with --large, 10^6) tasks',
  async run(ctx) {
    const p4 = (ratio?: number) => [target('P4', 'list/search p95 at 10^6 ≤ 1.5× at 10^4', ratio, 1.5, '×', '<=')];
    if (!hasRoute(ctx.client, 'listTasks') || !hasRoute(ctx.client, 'createTask')) return skipped(this, 'projects (task list/search) not available', p4());
    const small = 10_000;
    const seeder = Boolean(findExport('seedProjects'));
    if (seeder) {
      await ensureProject(ctx);
      const missing = small - (ctx.fixtures.taskCount ?? ctx.fixtures.taskIds?.length ?? 0);
      if (missing > 0) await seedInto(ctx, missing);
    } else {
      await ensureTasks(ctx, Math.min(small, Number(process.env.BENCH_LIST_TASKS ?? 2000)));
      ctx.fixtures.taskCount ??= ctx.fixtures.taskIds?.length;
    }
    const phases: Record<string, LoadResult> = {};
    phases.list_1e4 = await measure(ctx, 'list');
    phases.search_1e4 = await measure(ctx, 'search');
    const metrics: Record<string, number | string> = {
      listP95_1e4: phases.list_1e4.latencyMs.p95,
      searchP95_1e4: phases.search_1e4.latencyMs.p95,
      tasksInProject: ctx.fixtures.taskCount ?? 0,
    };
    let ratio: number | undefined;
    let failed: string | undefined;
    if (ctx.opts.large && seeder) {
      await seedInto(ctx, 1_000_000 - (ctx.fixtures.taskCount ?? small));
      phases.list_1e6 = await measure(ctx, 'list');
      phases.search_1e6 = await measure(ctx, 'search');
      metrics.listP95_1e6 = phases.list_1e6.latencyMs.p95;
      metrics.searchP95_1e6 = phases.search_1e6.latencyMs.p95;
      metrics.statuses_1e6 = JSON.stringify({ list: phases.list_1e6.statuses, search: phases.search_1e6.statuses });
      const parts = [okP95(phases.list_1e4), okP95(phases.list_1e6), okP95(phases.search_1e4), okP95(phases.search_1e6)];
      if (parts.every((p) => p !== undefined)) {
        const [l4, l6, s4, s6] = parts as number[];
        ratio = round(Math.max(l6! / Math.max(0.01, l4!), s6! / Math.max(0.01, s4!)), 3);
        metrics.p95Ratio = ratio;
      } else {
        failed = [phases.list_1e4, phases.list_1e6, phases.search_1e4, phases.search_1e6].some((r) => r.requests === 0)
          ? 'a phase completed no request' : 'non-2xx answers in a phase';
        // One request on its own, to say what the failures were (status, problem code, time).
        for (const q of ['status=todo', 'q=billing']) {
          const t0 = Date.now();
          const r = await ctx.client.call('GET', `/v1/orgs/${ctx.fixtures.tenant!.orgId}/projects/${ctx.fixtures.projectId}/tasks?limit=25&${q}`, { token: ctx.fixtures.tenant!.token });
          metrics[`single_${q}`] = `${r.status} ${r.body?.code ?? ''} in ${Date.now() - t0} ms`;
        }
      }
    } else {
      metrics.note = ctx.opts.large ? 'seeder (projects) not available: 10^6 not measured' : '10^6 not measured (opt-in: --large)';
    }
    return {
      name: this.name, title: this.title, status: 'ok', endpoint: 'GET /v1/orgs/{orgId}/projects/{projectId}/tasks',
      load: phases.list_1e4, phases, metrics,
      targets: failed ? [{ id: 'P4', description: 'list/search p95 at 10^6 ≤ 1.5× at 10^4', measured: failed, threshold: '<= 1.50×', pass: false }] : p4(ratio),
    };
  },
};
