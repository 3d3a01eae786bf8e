import { randomBytes, randomInt, randomUUID } from 'node:crypto';
import { callShed, createProject, hasRoute, mapLimit, signup, taskBody, type Tenant } from '../lib/api.ts';
import { runLoad, type LoadRequest } from '../lib/load.ts';
import { sleep } from '../lib/processes.ts';
import { skipped, target, type BenchContext, type Scenario, type ScenarioResult, type TargetResult } from '../lib/types.ts';
import { ensureProject, ensureTenant } from './fixtures.ts';
import { ratioTo } from './reads.ts';

export interface WriteTarget {
  endpoint: string;
  /** One POST with a fresh Idempotency-Key per request (key → body is what a retrying client resends). */
  request: LoadRequest;
  path: string;
  body: () => unknown;
}

let counter = 0;

/** The richest create that exists in this build: task (outbox + audit) → project → organization. */
export async function pickCreate(ctx: BenchContext, tenant?: Tenant): Promise<WriteTarget | undefined> {
  const c = ctx.client;
  if (!hasRoute(c, 'signup')) return undefined;
  const t = tenant ?? (await ensureTenant(ctx));
  const headers = () => ({ authorization: `Bearer ${t.token}`, 'idempotency-key': randomUUID() });
  let path: string;
  let endpoint: string;
  let body: () => unknown;
  if (hasRoute(c, 'createTask')) {
    const projectId = await ensureProject(ctx);
    path = `/v1/orgs/${t.orgId}/projects/${projectId}/tasks`;
    endpoint = 'POST /v1/orgs/{orgId}/projects/{projectId}/tasks';
    body = () => taskBody(counter++);
  } else if (hasRoute(c, 'createProject')) {
    path = `/v1/orgs/${t.orgId}/projects`;
    endpoint = 'POST /v1/orgs/{orgId}/projects';
    body = () => {
      const key = `K${(counter++).toString(36).toUpperCase()}${randomBytes(2).toString('hex').toUpperCase()}`.replace(/[0-9]/g, 'Q').slice(0, 10);
      return { name: `Bench ${key}`, key };
    };
  } else if (hasRoute(c, 'createOrg')) {
    path = '/v1/orgs';
    endpoint = 'POST /v1/orgs';
    body = () => ({ name: `Bench org ${counter++} ${randomBytes(3).toString('hex')}` });
  } else {
    return undefined;
  }
  return { endpoint, path, body, request: { method: 'POST', path, headers, body } };
}

/** A project that task creates go to, with the token of a member of its org. */
export interface CreateTarget {
  tenant: Tenant;
  projectId: string;
}

/** The three write shapes of P3: how many orgs and projects the writers are spread over. */
export const CREATE_SHAPES = {
  spread: { orgs: 10, projectsPerOrg: 5 },
  oneOrg: { orgs: 1, projectsPerOrg: 50 },
} as const;

/**
 * `orgs` × `projectsPerOrg` projects (made through the API once per run, shared by the scenarios that ask
 * for the same shape). The spread shape includes the main fixture tenant; one-org is an org of its own.
 */
export async function ensureCreateTargets(ctx: BenchContext, shape: keyof typeof CREATE_SHAPES): Promise<CreateTarget[]> {
  const have = ctx.fixtures[shape];
  if (have) return have;
  const { orgs, projectsPerOrg } = CREATE_SHAPES[shape];
  ctx.log(`creating ${orgs} org(s) × ${projectsPerOrg} projects for ${shape === 'spread' ? 'create' : 'create-one-org'}`);
  const tenants: Tenant[] =
    shape === 'spread'
      ? [await ensureTenant(ctx), ...(await mapLimit(Array.from({ length: orgs - 1 }, (_, i) => i), 2, (i) => signup(ctx.client, `spread${i}`)))]
      : [await signup(ctx.client, 'one-org')];
  const slots = tenants.flatMap((tenant, o) => Array.from({ length: projectsPerOrg }, (_, p) => ({ tenant, key: `W${o}X${p}${shape === 'spread' ? 'S' : 'O'}` })));
  const targets = await mapLimit(slots, 4, async (s) => ({ tenant: s.tenant, projectId: await createProject(ctx.client, s.tenant, 'Write', s.key) }));
  ctx.fixtures[shape] = targets;
  return targets;
}

/** Closed-loop task creates, each to a random one of `targets`, each with a fresh Idempotency-Key. */
function createRequest(targets: CreateTarget[]): LoadRequest {
  // runLoad resolves path, then headers, then body for each request: the token follows the path's org.
  let current = targets[0]!;
  return {
    method: 'POST',
    path: () => {
      current = targets[randomInt(targets.length)]!;
      return `/v1/orgs/${current.tenant.orgId}/projects/${current.projectId}/tasks`;
    },
    headers: () => ({ authorization: `Bearer ${current.tenant.token}`, 'idempotency-key': randomUUID() }),
    body: () => taskBody(counter++),
  };
}

/**
 * After the load: the project's task numbers, read back through the public list, must be exactly 1..N
 * (the gap-free promise under all writers on one project). Waits for in-flight creates first.
 */
async function numbersGapFree(ctx: BenchContext, t: CreateTarget): Promise<string> {
  await sleep(1500);
  const numbers: number[] = [];
  let cursor: string | undefined;
  do {
    const qs = new URLSearchParams({ limit: '100', sort: 'number', ...(cursor ? { cursor } : {}) });
    const res = await callShed(ctx.client, 'GET', `/v1/orgs/${t.tenant.orgId}/projects/${t.projectId}/tasks?${qs}`, { token: t.tenant.token });
    if (res.status !== 200) return `list answered ${res.status}`;
    for (const row of res.body.data ?? []) numbers.push(row.number);
    cursor = res.body.nextCursor ?? undefined;
  } while (cursor);
  const gap = numbers.findIndex((n, i) => n !== i + 1);
  return gap === -1 ? `yes (1..${numbers.length})` : `NO: position ${gap + 1} holds ${numbers[gap]}`;
}

const P3 = {
  create: { ratio: 0.5, what: 'create spread over 50 projects in 10 orgs' },
  'create-one-org': { ratio: 0.4, what: 'create-one-org: all writers in one org, 50 projects' },
  'create-hot': { ratio: 0.25, what: 'create-hot: all writers on one project of one org' },
} as const;

function p3(name: keyof typeof P3, ratio?: number): TargetResult[] {
  const { ratio: min, what } = P3[name];
  return [target('P3', `${what} ≥ ${min.toFixed(2)}× naive insert`, ratio, min, '×', '>=')];
}

async function runCreate(ctx: BenchContext, s: Scenario & { name: CreateName }, targets: CreateTarget[], extra: Record<string, string> = {}): Promise<ScenarioResult> {
  const load = await runLoad({ baseUrl: ctx.api.baseUrl, serverPid: ctx.api.pid, request: createRequest(targets), durationSec: ctx.opts.durationSec, connections: ctx.opts.connections });
  const ratio = ratioTo(ctx, 'insert', load.okPerSec);
  const orgs = new Set(targets.map((t) => t.tenant.orgId)).size;
  return {
    name: s.name, title: s.title, status: 'ok', endpoint: 'POST /v1/orgs/{orgId}/projects/{projectId}/tasks', load, baseline: 'insert', ratio,
    metrics: { orgs, projects: targets.length, ...extra },
    targets: p3(s.name, ratio),
  };
}

type CreateName = keyof typeof P3;

/** A P3 scenario: skipped (with its target n/a) in a build without task creates; `measure` runs the load. */
function createScenario(name: CreateName, title: string, measure: (ctx: BenchContext, s: Scenario & { name: CreateName }) => Promise<ScenarioResult>): Scenario {
  const s: Scenario & { name: CreateName } = {
    name,
    title,
    baseline: 'insert',
    async run(ctx) {
      const c = ctx.client;
      if (!hasRoute(c, 'signup') || !hasRoute(c, 'createProject') || !hasRoute(c, 'createTask')) return skipped(s, 'task create (projects) not available', p3(name));
      return measure(ctx, s);
    },
  };
  return s;
}

export const create = createScenario('create', 'Create task with Idempotency-Key (write + outbox + audit), spread over 50 projects in 10 orgs', async (ctx, s) => {
  const targets = await ensureCreateTargets(ctx, 'spread');
  // Idempotency check: the same key and body twice must give the same resource.
  const { tenant, projectId } = targets[0]!;
  const path = `/v1/orgs/${tenant.orgId}/projects/${projectId}/tasks`;
  const body = taskBody(counter++);
  const h = { 'idempotency-key': randomUUID() };
  const first = await callShed(ctx.client, 'POST', path, { token: tenant.token, body, headers: h });
  const second = await callShed(ctx.client, 'POST', path, { token: tenant.token, body, headers: h });
  const replay = first.status < 300 && second.status === first.status && second.body?.id === first.body?.id ? 'same resource' : `differs (${first.status}/${second.status})`;
  return runCreate(ctx, s, targets, { idempotentReplay: replay });
});

export const createOneOrg = createScenario('create-one-org', 'Create task, all writers in one org across 50 projects (per-tenant ceiling)', async (ctx, s) =>
  runCreate(ctx, s, await ensureCreateTargets(ctx, 'oneOrg')),
);

export const createHot = createScenario('create-hot', 'Create task, all writers on one project of one org (per-project ceiling)', async (ctx, s) => {
  // A project of its own (in the one-org org): its numbers are checked afterwards, from 1.
  const [org] = await ensureCreateTargets(ctx, 'oneOrg');
  const hot = { tenant: org!.tenant, projectId: await createProject(ctx.client, org!.tenant, 'Hot', 'HOT') };
  const result = await runCreate(ctx, s, [hot]);
  result.metrics = { ...result.metrics, numbersGapFree: await numbersGapFree(ctx, hot) };
  return result;
});
