import { createProject, createTask, hasRoute, listTaskIds, mapLimit, signup, type Tenant } from '../lib/api.ts';
import type { LoadRequest } from '../lib/load.ts';
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

/** At least n tasks in the fixture project (created through POST, 8 at a time). */
export async function ensureTasks(ctx: BenchContext, n: number): Promise<string[]> {
  const t = await ensureTenant(ctx);
  const projectId = await ensureProject(ctx);
  const have = ctx.fixtures.taskIds ?? [];
  if (have.length < n) {
    ctx.log(`creating ${n - have.length} tasks through the API`);
    const created = await mapLimit(
      Array.from({ length: n - have.length }, (_, i) => have.length + i),
      8,
      (i) => createTask(ctx.client, t, projectId, i),
    );
    ctx.fixtures.taskIds = [...have, ...created];
  }
  return ctx.fixtures.taskIds!;
}

export { listTaskIds };

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
