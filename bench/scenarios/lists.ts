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
  return runLoad({ baseUrl: ctx.api.baseUrl, request, durationSec: ctx.opts.durationSec, connections: ctx.opts.connections });
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
    if (ctx.opts.large && seeder) {
      await seedInto(ctx, 1_000_000 - (ctx.fixtures.taskCount ?? small));
      phases.list_1e6 = await measure(ctx, 'list');
      phases.search_1e6 = await measure(ctx, 'search');
      metrics.listP95_1e6 = phases.list_1e6.latencyMs.p95;
      metrics.searchP95_1e6 = phases.search_1e6.latencyMs.p95;
      ratio = round(Math.max(
        phases.list_1e6.latencyMs.p95 / Math.max(0.01, phases.list_1e4.latencyMs.p95),
        phases.search_1e6.latencyMs.p95 / Math.max(0.01, phases.search_1e4.latencyMs.p95),
      ), 3);
      metrics.p95Ratio = ratio;
    } else {
      metrics.note = ctx.opts.large ? 'seeder (projects) not available: 10^6 not measured' : '10^6 not measured (opt-in: --large)';
    }
    return {
      name: this.name, title: this.title, status: 'ok', endpoint: 'GET /v1/orgs/{orgId}/projects/{projectId}/tasks',
      load: phases.list_1e4, phases, metrics, targets: p4(ratio),
    };
  },
};
