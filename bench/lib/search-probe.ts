/**
 * `npx tsx bench/lib/search-probe.ts DATABASE_URL TENANT PROJECT [runs]`: times the projects module's
 * list/search query (the exact SQL the API runs, as the app role under RLS) for the bench's words, and
 * prints EXPLAIN ANALYZE of each once. For looking at P4 without the HTTP layer.
 */
import { CompiledQuery } from 'kysely';
import { openDatabase } from '../../src/platform/db/database.ts';
import { projectsScope } from '../../src/modules/projects/projects.repo.ts';
import { listTasksQuery, type TaskListQuery } from '../../src/modules/projects/tasks.repo.ts';

const [url, tenant, project, runsArg] = process.argv.slice(2);
if (!url || !tenant || !project) throw new Error('usage: search-probe.ts DATABASE_URL TENANT PROJECT [runs]');
const runs = Number(runsArg ?? 20);
const db = await openDatabase({ databaseUrl: url, poolMax: 2 });
const scope = projectsScope(db);
const queries: Array<[string, Omit<TaskListQuery, 'limit'>]> = [
  ['status=todo', { sort: '-number', status: ['todo'] }],
  ...['billing', 'login', 'export', 'latency', 'bench', 'billing timeout', 'zebra'].map((w): [string, Omit<TaskListQuery, 'limit'>] => [`q=${w}`, { sort: '-number', q: w }]),
  ['q=export sort=-updatedAt status=todo', { sort: '-updatedAt', q: 'export', status: ['todo'] }],
];
for (const [name, query] of queries) {
  const times: number[] = [];
  let n = 0;
  for (let i = 0; i < runs; i++) {
    const t0 = performance.now();
    n = (await scope.withTenantRead(tenant, (trx) => listTasksQuery(trx, tenant, project, { limit: 25, ...query }).execute())).length;
    times.push(performance.now() - t0);
  }
  times.sort((a, b) => a - b);
  const p95 = times[Math.min(runs - 1, Math.floor(runs * 0.95))]!;
  console.log(`${name.padEnd(40)} rows ${String(n).padStart(2)}  median ${times[Math.floor(runs / 2)]!.toFixed(2)} ms  p95 ${p95.toFixed(2)} ms  max ${times[runs - 1]!.toFixed(2)} ms`);
  if (process.env.EXPLAIN) {
    const compiled = await scope.withTenantRead(tenant, async (trx) => {
      const c = listTasksQuery(trx, tenant, project, { limit: 25, ...query }).compile();
      return (await trx.executeQuery<Record<string, string>>(CompiledQuery.raw(`explain (analyze, costs off) ${c.sql}`, [...c.parameters]))).rows;
    });
    console.log(compiled.map((r) => r['QUERY PLAN']).join('\n'));
  }
}
await db.close();
