import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { hasRoute } from '../lib/api.ts';
import { runLoad, type LoadResult } from '../lib/load.ts';
import { ROOT } from '../lib/processes.ts';
import { round } from '../lib/stats.ts';
import { skipped, target, type BenchContext, type Scenario } from '../lib/types.ts';
import { ensureProject, ensureTasks, ensureTenant } from './fixtures.ts';

function seedAvailable(): boolean {
  return /case 'seed'/.test(fs.readFileSync(path.join(ROOT, 'src/cli.ts'), 'utf8'));
}

/** `plinth seed` into the fixture org/project (its own process, owner connection). */
export async function runSeed(ctx: BenchContext, tasks: number): Promise<void> {
  const t = await ensureTenant(ctx);
  const projectId = await ensureProject(ctx);
  const args = ['--import', 'tsx', 'src/cli.ts', 'seed', '--orgs', '1', '--tasks', String(tasks), '--org-id', t.orgId, '--project-id', projectId];
  ctx.log(`seeding ${tasks} tasks: plinth ${args.slice(3).join(' ')}`);
  const started = Date.now();
  await new Promise<void>((resolve, reject) => {
    const p = spawn(process.execPath, args, {
      cwd: ROOT,
      env: { ...process.env, DATABASE_URL: ctx.env.databaseUrl, LOG_LEVEL: 'warn', NODE_ENV: 'production', REDIS_URL: ctx.env.redisUrl, REDIS_PREFIX: ctx.env.redisPrefix },
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    let err = '';
    p.stderr?.on('data', (b: Buffer) => (err = (err + b.toString()).slice(-2000)));
    p.on('exit', (code) => (code === 0 ? resolve() : reject(new Error(`seed exited ${code}: ${err}`))));
  });
  ctx.log(`seeded ${tasks} tasks in ${round((Date.now() - started) / 1000, 1)} s`);
}

async function measure(ctx: BenchContext, kind: 'list' | 'search'): Promise<LoadResult> {
  const t = ctx.fixtures.tenant!;
  const projectId = ctx.fixtures.projectId!;
  const words = ['bench', 'task', 'alpha', 'deploy', 'review'];
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
    if (seedAvailable()) {
      const have = ctx.fixtures.taskIds?.length ?? 0;
      if (have < small) await runSeed(ctx, small - have);
    } else {
      await ensureTasks(ctx, Math.min(small, Number(process.env.BENCH_LIST_TASKS ?? 2000)));
    }
    const phases: Record<string, LoadResult> = {};
    phases.list_1e4 = await measure(ctx, 'list');
    phases.search_1e4 = await measure(ctx, 'search');
    const metrics: Record<string, number | string> = {
      listP95_1e4: phases.list_1e4.latencyMs.p95,
      searchP95_1e4: phases.search_1e4.latencyMs.p95,
      tasksSmall: seedAvailable() ? small : (ctx.fixtures.taskIds?.length ?? 0),
    };
    let ratio: number | undefined;
    if (ctx.opts.large && seedAvailable()) {
      await runSeed(ctx, 1_000_000 - small);
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
      metrics.note = ctx.opts.large ? 'plinth seed not available: 10^6 not measured' : '10^6 not measured (opt-in: --large)';
    }
    return {
      name: this.name, title: this.title, status: 'ok', endpoint: 'GET /v1/orgs/{orgId}/projects/{projectId}/tasks',
      load: phases.list_1e4, phases, metrics, targets: p4(ratio),
    };
  },
};
