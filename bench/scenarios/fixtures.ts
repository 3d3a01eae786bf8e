import { sql } from 'kysely';
import { pathToFileURL } from 'node:url';
import { openDatabase } from '../../src/platform/db/database.ts';
import { createProject, createTask, hasRoute, listTaskIds, mapLimit, signup, type Tenant } from '../lib/api.ts';
import { findExport } from '../lib/find-export.ts';
import type { LoadRequest } from '../lib/load.ts';
import { sleep } from '../lib/processes.ts';
import { round } from '../lib/stats.ts';
import type { BenchContext } from '../lib/types.ts';

/** Fixtures are created through the public API on first use and shared by the scenarios of one run. */
export async function ensureTenant(ctx: BenchContext): Promise<Tenant> {
  ctx.fixtures.tenant ??= await signup(ctx.client, 'main');
  return ctx.fixtures.tenant;
}

export async function ensureProject(ctx: BenchContext): Promise<string> {
  const t = await ensureTenant(ctx);
  ctx.fixtures.projectId ??= await createProject(ctx.client, t);
  return ctx.fixtures.projectId;
}

/** Tasks list-search measures at (10^4); seeded in one go the first time anything needs many tasks. */
export const SEED_TASKS = 10_000;

/** At least n tasks in the fixture project (created through POST, 8 at a time). */
export async function ensureTasks(ctx: BenchContext, n: number): Promise<string[]> {
  const t = await ensureTenant(ctx);
  const projectId = await ensureProject(ctx);
  const have = ctx.fixtures.taskIds ?? [];
  if (have.length < n && n - have.length > 200 && findExport('seedProjects')) {
    // Seed the list-search size at once, before any write load: seeding continues the project's task
    // counter, so it must not race with API creates still finishing.
    const target = Math.max(n, SEED_TASKS);
    if ((ctx.fixtures.taskCount ?? 0) < target) await seedInto(ctx, target - (ctx.fixtures.taskCount ?? have.length));
    ctx.fixtures.taskIds = await listTaskIds(ctx.client, t, projectId, n);
  } else if (have.length < n) {
    ctx.log(`creating ${n - have.length} tasks through the API`);
    const created = await mapLimit(
      Array.from({ length: n - have.length }, (_, i) => have.length + i),
      8,
      (i) => createTask(ctx.client, t, projectId, i),
    );
    ctx.fixtures.taskIds = [...have, ...created];
    ctx.fixtures.taskCount = (ctx.fixtures.taskCount ?? have.length) + created.length;
  }
  return ctx.fixtures.taskIds!;
}

/** The projects module's bulk seeder (what `plinth seed` uses), when this build has it. */
async function loadSeeder(): Promise<((owner: any, opts: any) => Promise<{ tasks: number }>) | undefined> {
  const file = findExport('seedProjects');
  if (!file) return undefined;
  const mod = (await import(pathToFileURL(file).href)) as { seedProjects: (owner: any, opts: any) => Promise<{ tasks: number }> };
  return mod.seedProjects;
}

/**
 * Seeds `tasks` more tasks straight into the fixture org (owner connection, INSERT … SELECT batches),
 * so the bench's signed-up user can list them. The fixture project's key sorts first, so the
 * seeder (one project per org) fills that project.
 */
export async function seedInto(ctx: BenchContext, tasks: number): Promise<void> {
  const seed = await loadSeeder();
  if (!seed) throw new Error('seedProjects not available');
  const t = await ensureTenant(ctx);
  await ensureProject(ctx);
  // Let any write load's in-flight requests finish: the seeder continues the project's task counter.
  await sleep(1500);
  ctx.log(`seeding ${tasks} tasks into the fixture project`);
  const started = Date.now();
  const db = await openDatabase({ databaseUrl: ctx.env.databaseUrl, poolMax: 2 });
  try {
    let last = 0;
    await seed(db.owner, {
      orgs: [{ id: t.orgId, memberIds: [t.userId] }], tasks, projectsPerOrg: 1,
      onProgress: (p: { tasksDone: number; tasksTotal: number }) => {
        if (p.tasksDone - last >= 100_000) {
          last = p.tasksDone;
          ctx.log(`  seeded ${p.tasksDone}/${p.tasksTotal}`);
        }
      },
    });
    // Autovacuum would vacuum and analyze the grown tables within a minute or so — a database core for tens
    // of seconds at 10^6 rows, under whatever scenario runs then. Do it now, as setup: the scenarios measure a
    // table that has settled (the planner sees 10^6 rows, the visibility map is set), as a long-lived one has.
    await sql`vacuum (analyze)`.execute(db.owner);
    // The load wrote ~1 GB of WAL: past max_wal_size, so Postgres starts a checkpoint that spreads its writes
    // over the next half minute (checkpoint_completion_target), under the scenarios' commits. Taken now, as
    // setup, like the vacuum.
    await sql`checkpoint`.execute(db.owner);
  } finally {
    await db.close();
  }
  ctx.fixtures.taskCount = (ctx.fixtures.taskCount ?? ctx.fixtures.taskIds?.length ?? 0) + tasks;
  ctx.log(`seeded ${tasks} tasks in ${round((Date.now() - started) / 1000, 1)} s`);
  const page = await ctx.client.call('GET', `/v1/orgs/${t.orgId}/projects/${ctx.fixtures.projectId}/tasks?limit=100`, { token: t.token });
  if (page.status !== 200 || (page.body?.data?.length ?? 0) < 100) {
    throw new Error(`seeded tasks not visible in the fixture project (list answered ${page.status} with ${page.body?.data?.length ?? 0} rows)`);
  }
}


/** The most specific authenticated read that exists in this build, and what it is. */
export async function pickCachedRead(ctx: BenchContext): Promise<{ endpoint: string; request: LoadRequest } | undefined> {
  const c = ctx.client;
  if (!hasRoute(c, 'signup')) return undefined;
  const t = await ensureTenant(ctx);
  const headers = { authorization: `Bearer ${t.token}` };
  if (hasRoute(c, 'getTask') && hasRoute(c, 'createTask')) {
    const [taskId] = await ensureTasks(ctx, 1);
    return { endpoint: 'GET /v1/orgs/{orgId}/tasks/{taskId}', request: { path: `/v1/orgs/${t.orgId}/tasks/${taskId}`, headers } };
  }
  if (hasRoute(c, 'getProject') && hasRoute(c, 'createProject')) {
    const projectId = await ensureProject(ctx);
    return { endpoint: 'GET /v1/orgs/{orgId}/projects/{projectId}', request: { path: `/v1/orgs/${t.orgId}/projects/${projectId}`, headers } };
  }
  if (hasRoute(c, 'getOrg')) return { endpoint: 'GET /v1/orgs/{orgId}', request: { path: `/v1/orgs/${t.orgId}`, headers } };
  if (hasRoute(c, 'me')) return { endpoint: 'GET /v1/me', request: { path: '/v1/me', headers } };
  return undefined;
}
