import { randomBytes, randomUUID } from 'node:crypto';
import { hasRoute, taskBody, type Tenant } from '../lib/api.ts';
import { runLoad, type LoadRequest } from '../lib/load.ts';
import { skipped, target, type BenchContext, type Scenario } from '../lib/types.ts';
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

export const create: Scenario = {
  name: 'create',
  title: 'Create with Idempotency-Key (write + outbox + audit)',
  baseline: 'insert',
  async run(ctx) {
    const p3 = (r?: number) => [target('P3', 'create ≥ 0.50× naive insert', r, 0.5, '×', '>=')];
    const w = await pickCreate(ctx);
    if (!w) return skipped(this, 'no create endpoint (identity/projects) available', p3());
    const t = await ensureTenant(ctx);
    // Idempotency check: the same key and body twice must give the same resource.
    const key = randomUUID();
    const body = w.body();
    const h = { 'idempotency-key': key };
    const first = await ctx.client.call('POST', w.path, { token: t.token, body, headers: h });
    const second = await ctx.client.call('POST', w.path, { token: t.token, body, headers: h });
    const replay = first.status < 300 && second.status === first.status && second.body?.id === first.body?.id ? 'same resource' : `differs (${first.status}/${second.status})`;
    const load = await runLoad({ baseUrl: ctx.api.baseUrl, request: w.request, durationSec: ctx.opts.durationSec, connections: ctx.opts.connections });
    const ratio = ratioTo(ctx, 'insert', load.okPerSec);
    return {
      name: this.name, title: this.title, status: 'ok', endpoint: w.endpoint, load, baseline: 'insert', ratio,
      metrics: { idempotentReplay: replay },
      targets: p3(ratio),
    };
  },
};
