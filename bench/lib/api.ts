import { randomBytes, randomUUID } from 'node:crypto';

/**
 * A small HTTP client for setting up bench fixtures through Plinth's public API (the same calls a
 * user makes), plus feature detection from /openapi.json so a scenario whose feature has not landed
 * reports "skipped" instead of inventing numbers.
 */
export interface Api {
  baseUrl: string;
  routes: Set<string>;
  has(method: string, path: string): boolean;
  call<T = any>(method: string, path: string, opts?: { token?: string; body?: unknown; headers?: Record<string, string> }): Promise<{ status: number; body: T; headers: Headers }>;
}

export async function connectApi(baseUrl: string): Promise<Api> {
  const routes = new Set<string>();
  try {
    const res = await fetch(`${baseUrl}/openapi.json`);
    if (res.ok) {
      const doc = (await res.json()) as { paths?: Record<string, Record<string, unknown>> };
      for (const [p, ops] of Object.entries(doc.paths ?? {})) {
        for (const m of Object.keys(ops)) routes.add(`${m.toUpperCase()} ${p}`);
      }
    }
  } catch {
    // no OpenAPI: every feature reports skipped
  }
  return {
    baseUrl,
    routes,
    has: (method, path) => routes.has(`${method.toUpperCase()} ${path}`),
    async call(method, path, opts = {}) {
      const res = await fetch(`${baseUrl}${path}`, {
        method,
        headers: {
          ...(opts.body !== undefined ? { 'content-type': 'application/json' } : {}),
          ...(opts.token ? { authorization: `Bearer ${opts.token}` } : {}),
          ...opts.headers,
        },
        body: opts.body === undefined ? undefined : JSON.stringify(opts.body),
        signal: AbortSignal.timeout(30_000),
      });
      const text = await res.text();
      let body: any = text;
      try {
        body = text ? JSON.parse(text) : undefined;
      } catch {
        // keep text
      }
      return { status: res.status, body, headers: res.headers };
    },
  };
}

export const ROUTES = {
  signup: ['POST', '/v1/auth/signup'],
  login: ['POST', '/v1/auth/login'],
  me: ['GET', '/v1/me'],
  createOrg: ['POST', '/v1/orgs'],
  getOrg: ['GET', '/v1/orgs/{orgId}'],
  createProject: ['POST', '/v1/orgs/{orgId}/projects'],
  getProject: ['GET', '/v1/orgs/{orgId}/projects/{projectId}'],
  createTask: ['POST', '/v1/orgs/{orgId}/projects/{projectId}/tasks'],
  listTasks: ['GET', '/v1/orgs/{orgId}/projects/{projectId}/tasks'],
  getTask: ['GET', '/v1/orgs/{orgId}/tasks/{taskId}'],
  metrics: ['GET', '/metrics'],
} as const;

export type RouteName = keyof typeof ROUTES;

export function hasRoute(api: Api, name: RouteName): boolean {
  const [m, p] = ROUTES[name];
  return api.has(m, p);
}

export interface Tenant {
  token: string;
  orgId: string;
  userId: string;
  email: string;
  password: string;
}

function expect(res: { status: number; body: any }, want: number[], what: string): void {
  if (!want.includes(res.status)) {
    throw new Error(`${what} answered ${res.status}: ${JSON.stringify(res.body).slice(0, 300)}`);
  }
}

/**
 * A fixture call that the API may shed while the machine is busy (503 overloaded, 429): retried after its
 * Retry-After (capped at 2 s), up to 30 attempts. Load runs never go through this.
 */
export async function callShed<T = any>(api: Api, method: string, path: string, opts: Parameters<Api['call']>[2] = {}): Promise<{ status: number; body: T; headers: Headers }> {
  for (let attempt = 1; ; attempt++) {
    const res = await api.call<T>(method, path, opts);
    if ((res.status !== 503 && res.status !== 429) || attempt >= 30) return res;
    const after = Number(res.headers.get('retry-after') ?? 1);
    await new Promise((r) => setTimeout(r, Math.min(2_000, Math.max(100, (Number.isFinite(after) ? after : 1) * 1000))));
  }
}

/** Signs up a fresh user with their own organization (the signup contract of the identity module). */
export async function signup(api: Api, label = 'bench'): Promise<Tenant> {
  const email = `${label}-${randomBytes(5).toString('hex')}@bench.plinth.test`;
  const password = `Bench-${randomBytes(12).toString('hex')}`;
  const res = await callShed(api, 'POST', '/v1/auth/signup', {
    body: { email, password, name: `Bench ${label}`, organizationName: `Bench org ${label}` },
  });
  expect(res, [200, 201], 'signup');
  const token = res.body?.token ?? res.body?.session?.token;
  const orgId = res.body?.organization?.id ?? res.body?.org?.id;
  if (!token || !orgId) throw new Error(`signup answered without token/organization: ${JSON.stringify(res.body).slice(0, 300)}`);
  return { token, orgId, userId: res.body?.user?.id, email, password };
}

/** `key` must be unique in the org (`^[A-Z][A-Z0-9]{1,9}$`); the default is random (fine for a few projects). */
export async function createProject(api: Api, t: Tenant, name = 'Bench', key = `B${randomBytes(2).toString('hex').toUpperCase().replace(/[0-9]/g, 'X')}`): Promise<string> {
  const res = await callShed(api, 'POST', `/v1/orgs/${t.orgId}/projects`, {
    token: t.token,
    body: { name: `${name} ${key}`, key },
    headers: { 'idempotency-key': randomUUID() },
  });
  expect(res, [200, 201], 'create project');
  return res.body.id;
}

export function taskBody(i: number) {
  return { title: `Bench task ${i} ${randomBytes(3).toString('hex')}`, description: 'Created by the load benchmark' };
}

export async function createTask(api: Api, t: Tenant, projectId: string, i: number): Promise<string> {
  const res = await callShed(api, 'POST', `/v1/orgs/${t.orgId}/projects/${projectId}/tasks`, {
    token: t.token,
    body: taskBody(i),
    headers: { 'idempotency-key': randomUUID() },
  });
  expect(res, [200, 201], 'create task');
  return res.body.id;
}

/** All task ids of a project through the public list (keyset pages of 100). */
export async function listTaskIds(api: Api, t: Tenant, projectId: string, max: number): Promise<string[]> {
  const ids: string[] = [];
  let cursor: string | undefined;
  do {
    const qs = new URLSearchParams({ limit: '100', ...(cursor ? { cursor } : {}) });
    const res = await api.call('GET', `/v1/orgs/${t.orgId}/projects/${projectId}/tasks?${qs}`, { token: t.token });
    expect(res, [200], 'list tasks');
    for (const row of res.body.data ?? []) ids.push(row.id);
    cursor = res.body.nextCursor ?? undefined;
  } while (cursor && ids.length < max);
  return ids;
}

/** Runs fn over items with at most `concurrency` in flight. */
export async function mapLimit<T, R>(items: readonly T[], concurrency: number, fn: (item: T, i: number) => Promise<R>): Promise<R[]> {
  const out: R[] = new Array(items.length);
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(concurrency, items.length) }, async () => {
      while (next < items.length) {
        const i = next++;
        out[i] = await fn(items[i]!, i);
      }
    }),
  );
  return out;
}
