import fc from 'fast-check';
import { afterAll, describe, expect, it } from 'vitest';
import { newId } from '../../src/platform/ids.ts';
import { addMember, bearer, signup, type SignedUp } from '../helpers/auth.ts';
import { HOSTILE_STRINGS, hostileValue, validValue, type Schema } from '../helpers/schema-arbitrary.ts';
import { createTestPlatform } from '../helpers/test-platform.ts';

/**
 * Schema-driven fuzzing of the whole HTTP surface, from /openapi.json, so routes added later are covered
 * without editing this file. For every operation: requests generated from its schemas (valid ones, to
 * reach the handlers) and mutated ones (wrong types, hostile strings, boundary numbers, missing/extra
 * fields, forged cursors, huge/deep/malformed bodies, odd headers), sent with org A's real credentials.
 * Every response must be < 500; every error problem+json carrying the request id; and nothing of org B
 * (ids, names) may ever appear in a response.
 *
 * `npm test`: fixed seed, FUZZ_RUNS (default 3) valid + 3 mutated requests per operation.
 * `npm run fuzz`: random seed (printed), more runs; reproduce with FUZZ_SEED=<seed> FUZZ_RUNS=<n>.
 */
const RUNS = Number(process.env.FUZZ_RUNS ?? 3);
const SEED = process.env.FUZZ_SEED ? Number(process.env.FUZZ_SEED) : process.env.FUZZ_RANDOM ? Date.now() % 2 ** 31 : 20_261_201;
if (process.env.FUZZ_RANDOM || process.env.FUZZ_SEED) console.log(`fuzz: seed ${SEED}, ${RUNS} runs per operation (FUZZ_SEED=${SEED} to reproduce)`);

const LIMITS_OFF = {
  // The fuzz is about input handling: quotas and lockouts would turn most requests into 429s.
  RATE_LIMIT_PRINCIPAL: '10000000',
  RATE_LIMIT_ORG: '10000000',
  RATE_LIMIT_IP: '10000000',
  RATE_LIMIT_AUTH_FAILURES: '10000000',
  LOGIN_MAX_FAILURES_PER_ACCOUNT_PER_HOUR: '1000000',
  LOGIN_MAX_FAILURES_PER_ACCOUNT_IP_PER_HOUR: '1000000',
  LOGIN_MAX_FAILURES_PER_IP_PER_HOUR: '10000000',
  LOGIN_DELAY_AFTER_FAILURES: '1000000',
};

const t = await createTestPlatform({ env: LIMITS_OFF });
afterAll(async () => t.close());
const spec = (await t.app.inject({ url: '/openapi.json' })).json() as Schema;

async function call(who: SignedUp, method: string, url: string, payload?: object) {
  const res = await t.app.inject({ method: method as never, url, headers: who.auth, ...(payload ? { payload } : {}) });
  if (res.statusCode >= 300) throw new Error(`${method} ${url}: ${res.statusCode} ${res.body}`);
  return res.json();
}

/** Org B: one object of every kind, whose ids and names must never show up in org A's responses. */
async function seedOrgB() {
  const owner = await signup(t.app, { organizationName: 'ORG-B-MARKER org' });
  const org = `/v1/orgs/${owner.orgId}`;
  const project = await call(owner, 'POST', `${org}/projects`, { key: 'BSECRET', name: 'ORG-B-MARKER project' });
  const task = await call(owner, 'POST', `${org}/projects/${project.id}/tasks`, { title: 'ORG-B-MARKER task' });
  const comment = await call(owner, 'POST', `${org}/tasks/${task.id}/comments`, { body: 'ORG-B-MARKER comment' });
  const hook = await call(owner, 'POST', `${org}/webhooks`, { url: 'http://127.0.0.1:9/org-b-marker', events: ['projects.task_created'] });
  const key = await call(owner, 'POST', `${org}/api-keys`, { name: 'ORG-B-MARKER key', scopes: ['org:read'] });
  const invitation = await call(owner, 'POST', `${org}/invitations`, { email: 'org-b-marker@example.com', role: 'viewer' });
  return [owner.orgId, owner.userId, owner.email, project.id, task.id, comment.id, hook.id, key.id, invitation.id, invitation.token, 'ORG-B-MARKER', 'BSECRET'];
}

/** Org A: the caller's org, with an object of every kind, so generated requests reach real rows. */
async function seedOrgA() {
  const owner = await signup(t.app, { organizationName: 'Fuzz A' });
  const member = await signup(t.app, { name: 'A Member' });
  await addMember(t.app, owner, owner.orgId, member, 'member');
  const org = `/v1/orgs/${owner.orgId}`;
  const project = await call(owner, 'POST', `${org}/projects`, { key: 'AFUZZ', name: 'A project' });
  const task = await call(owner, 'POST', `${org}/projects/${project.id}/tasks`, { title: 'A task', assigneeId: member.userId, labels: ['a'] });
  await call(owner, 'POST', `${org}/tasks/${task.id}/comments`, { body: 'A comment' });
  const hook = await call(owner, 'POST', `${org}/webhooks`, { url: 'http://127.0.0.1:9/a', events: ['projects.task_created'] });
  const invitation = await call(owner, 'POST', `${org}/invitations`, { email: 'a-invitee@example.com', role: 'viewer' });
  const sessions = await call(owner, 'GET', '/v1/me/sessions');
  const deliveryId = newId();
  await t.db.withTenant(owner.orgId, (trx) =>
    trx.insertInto('webhook_deliveries').values({ tenant_id: owner.orgId, id: deliveryId, webhook_id: hook.id, event_id: newId(), event_type: 'projects.task_created', body: '{}', status: 'failed' }).execute(),
  );
  // Real values for parameters and id-valued body fields, by name; unknown names get random values.
  const ids: Record<string, string[]> = {
    orgId: [owner.orgId],
    projectId: [project.id],
    taskId: [task.id],
    webhookId: [hook.id],
    invitationId: [invitation.id],
    token: [invitation.token],
    userId: [member.userId, owner.userId],
    assigneeId: [member.userId],
    actorId: [owner.userId],
    sessionId: [sessions.data[0].id],
    deliveryId: [deliveryId],
    key: ['fuzz-flag'],
  };
  return { owner, ids };
}

const bMarkers = await seedOrgB();
const bIds = bMarkers.filter((m) => /^[0-9a-f-]{36}$/.test(m));
const a = await seedOrgA();

/** org A's credentials: its owner's session, and an API key with every scope the owner holds; renewed if the fuzz revokes them. */
const creds = {
  session: a.owner.token,
  apiKey: '',
  async renew(kind: 'session' | 'apiKey') {
    if (kind === 'session') {
      const res = await t.app.inject({ method: 'POST', url: '/v1/auth/login', payload: { email: a.owner.email, password: a.owner.password } });
      creds.session = res.json().token;
    } else {
      const key = await t.app.inject({ method: 'POST', url: `/v1/orgs/${a.owner.orgId}/api-keys`, headers: bearer(creds.session), payload: { name: 'fuzz', scopes: ['org:read', 'projects:read', 'projects:write', 'webhooks:manage', 'members:read'] } });
      creds.apiKey = key.json().secret;
    }
  },
};
await creds.renew('apiKey');
/** SCIM operations (/scim/v2) authenticate with org A's directory token and answer errors in the SCIM error schema. */
const scimToken = (await call(a.owner, 'POST', `/v1/orgs/${a.owner.orgId}/scim-tokens`, { name: 'fuzz' })).token as string;
const isScim = (op: { path: string }) => op.path.startsWith('/scim/');

interface Operation {
  method: string;
  path: string;
  params: Array<{ name: string; in: string; required?: boolean; schema: Schema }>;
  body?: Schema;
}

const operations: Operation[] = Object.entries(spec.paths as Record<string, Record<string, Schema>>).flatMap(([path, methods]) =>
  Object.entries(methods)
    .filter(([m]) => ['get', 'post', 'put', 'patch', 'delete'].includes(m))
    .map(([method, op]) => ({
      method: method.toUpperCase(),
      path,
      params: (op.parameters ?? []) as Operation['params'],
      body: op.requestBody?.content?.['application/json']?.schema as Schema | undefined,
    })),
);

interface Req {
  path: Record<string, string>;
  query: Record<string, unknown>;
  headers: Record<string, string>;
  body?: unknown;
  /** Sent as-is instead of JSON.stringify(body). */
  rawBody?: string;
  contentType?: string;
  /** Appended to the query string as-is (already encoded). */
  rawQuery?: string;
  /** Replaces one path segment with an already-encoded value. */
  rawPathParam?: [string, string];
  auth: 'session' | 'apiKey';
}

/** Percent-encodes, including lone surrogates (as the bytes of U+D800, which no decoder may accept). */
function enc(v: unknown): string {
  const s = typeof v === 'string' ? v : JSON.stringify(v) ?? '';
  return Array.from(s, (ch) => {
    try {
      return encodeURIComponent(ch);
    } catch {
      return '%ED%A0%80';
    }
  }).join('');
}

function validRequest(op: Operation): fc.Arbitrary<Req> {
  const byIn = (where: string) => op.params.filter((p) => p.in === where);
  const record = (ps: Operation['params']) =>
    fc.record(Object.fromEntries(ps.map((p) => [p.name, validValue(p.schema, spec, { ids: a.ids, name: p.name })])), {
      requiredKeys: ps.filter((p) => p.required).map((p) => p.name),
    });
  return fc.record({
    path: record(byIn('path')) as fc.Arbitrary<Record<string, string>>,
    query: record(byIn('query')),
    headers: fc.constant({}),
    body: op.body ? validValue(op.body, spec, { ids: a.ids }) : fc.constant(undefined),
    auth: fc.constantFrom('session' as const, 'apiKey' as const),
  });
}

const SWEEP = ['a\u0000b', 'x\ud800', '0000-01-01T00:00:00Z'];
const deep = (n: number) => '['.repeat(n) + ']'.repeat(n);
const forgedCursor = (k: unknown) => Buffer.from(JSON.stringify({ v: 1, f: 'AAAAAAAAAAAAAAAA', k })).toString('base64url');
const RAW_BODIES = [deep(100), deep(20_000), `{"a":${deep(70)}}`, '{"title":', 'null', '[]', '"x"', '1', '{}', '{"__proto__":{"x":1}}', '{"constructor":{"prototype":{"x":1}}}', 'x'.repeat(1_100_000), '\u0000', ''];
const RAW_QUERY_VALUES = ['Infinity', '-Infinity', 'NaN', '1e400', '-1', '0', '101', '2147483648', '%00', '%ED%A0%80', '%E0%A4%A', 'a%00b', '', '0000-01-01T00:00:00Z', '2016-12-31T23:59:60Z', 'true', '[]', '{}'];
const CURSORS = ['x', '%00', 'e30', forgedCursor(['0000-01-01T00:00:00Z', 1]), forgedCursor(['2024-02-30', 1]), forgedCursor(['\u0000', 'a']), forgedCursor([1e308, -1]), forgedCursor([null, '\ud800']), Buffer.from('{"v":1,"f":"x","k":[1e999,1]}').toString('base64url')];

/** One mutation of a valid request: the shapes of input the black-box test found 500s with. */
function mutated(op: Operation): fc.Arbitrary<Req> {
  const queryNames = op.params.filter((p) => p.in === 'query').map((p) => p.name);
  const pathNames = op.params.filter((p) => p.in === 'path').map((p) => p.name);
  const bodyFields = Object.keys(op.body?.properties ?? {});
  const required = (op.body?.required ?? []) as string[];
  const mutations: Array<fc.Arbitrary<(r: Req) => Req>> = [
    // odd headers used as data
    fc.record({ h: fc.constantFrom('if-match', 'if-none-match', 'idempotency-key', 'x-request-id', 'user-agent'), v: fc.constantFrom('x'.repeat(4000), '"v1"', '*', 'W/"x"', '', ' ', '😀', 'a b c') }).map(({ h, v }) => (r: Req) => ({ ...r, headers: { ...r.headers, [h]: v } })),
    // a body that is not the object the route expects
    fc.record({ raw: fc.constantFrom(...RAW_BODIES), ct: fc.constantFrom('application/json', 'application/json; charset=utf-8', 'text/plain', 'application/x-www-form-urlencoded') }).map(({ raw, ct }) => (r: Req) => ({ ...r, rawBody: raw, contentType: ct })),
  ];
  if (bodyFields.length > 0) {
    const field = fc.record({ f: fc.constantFrom(...bodyFields), v: hostileValue() }).map(({ f, v }) => (r: Req) => ({ ...r, body: { ...(r.body as object), [f]: v } }));
    mutations.push(field, field);
    mutations.push(fc.constantFrom('role', 'tenantId', 'id', 'createdBy', 'isPlatformAdmin', '__proto__', 'x\u0000').map((f) => (r: Req) => ({ ...r, body: { ...(r.body as object), [f]: 'owner' } })));
  }
  if (required.length > 0) {
    mutations.push(fc.constantFrom(...required).map((f) => (r: Req) => {
      const body = { ...(r.body as Record<string, unknown>) };
      delete body[f];
      return { ...r, body };
    }));
  }
  if (op.body) mutations.push(hostileValue().map((v) => (r: Req) => ({ ...r, body: v })));
  if (queryNames.length > 0) {
    mutations.push(fc.record({ q: fc.constantFrom(...queryNames), v: fc.oneof(fc.constantFrom(...HOSTILE_STRINGS), hostileValue()) }).map(({ q, v }) => (r: Req) => ({ ...r, query: { ...r.query, [q]: v } })));
    mutations.push(fc.record({ q: fc.constantFrom(...queryNames), v: fc.constantFrom(...RAW_QUERY_VALUES) }).map(({ q, v }) => (r: Req) => ({ ...r, rawQuery: `${q}=${v}` })));
    mutations.push(fc.constantFrom('unknown=1', 'limit=1&limit=2', 'sort=__proto__', 'x%00=1').map((raw) => (r: Req) => ({ ...r, rawQuery: raw })));
  }
  // boundary numbers around each numeric parameter's limits
  const numeric = op.params.filter((p) => p.in === 'query' && ['integer', 'number'].includes(p.schema?.type));
  if (numeric.length > 0) {
    mutations.push(fc.record({ p: fc.constantFrom(...numeric), d: fc.constantFrom(-1, 0, 1) }).map(({ p, d }) => (r: Req) => {
      const edge = fc.sample(fc.constantFrom(p.schema.minimum ?? 0, p.schema.maximum ?? 2 ** 31), 1)[0]!;
      return { ...r, query: { ...r.query, [p.name]: edge + d } };
    }));
  }
  // org B's ids where org A's are expected: a parameter or an id-valued body field
  const idFields = bodyFields.filter((f) => /Id$|^id$/.test(f));
  if (pathNames.length > 0 || idFields.length > 0) {
    mutations.push(fc.record({ at: fc.constantFrom(...pathNames.map((n) => ['path', n]), ...idFields.map((n) => ['body', n])), id: fc.constantFrom(...bIds) }).map(({ at: [where, name], id }) => (r: Req) =>
      where === 'path' ? { ...r, path: { ...r.path, [name!]: id } } : { ...r, body: { ...(r.body as object), [name!]: id } },
    ));
  }
  if (queryNames.includes('cursor')) mutations.push(fc.constantFrom(...CURSORS).map((c) => (r: Req) => ({ ...r, query: { ...r.query, cursor: c } })));
  if (pathNames.length > 0) {
    mutations.push(fc.record({ p: fc.constantFrom(...pathNames), v: fc.oneof(fc.constantFrom(...HOSTILE_STRINGS), fc.uuid(), fc.constant('x'.repeat(300))) }).map(({ p, v }) => (r: Req) => ({ ...r, path: { ...r.path, [p]: String(v) } })));
    mutations.push(fc.record({ p: fc.constantFrom(...pathNames), v: fc.constantFrom('%E0%A4%A', '%', '%%', '%00', '%ED%A0%80', '..', '%2e%2e', '%2F') }).map(({ p, v }) => (r: Req) => ({ ...r, rawPathParam: [p, v] })));
  }
  return fc.tuple(validRequest(op), fc.oneof(...mutations)).map(([r, m]) => m(r));
}

function toInject(op: Operation, r: Req) {
  let url = op.path.replace(/\{([^}]+)\}/g, (_, name: string) => (r.rawPathParam?.[0] === name ? r.rawPathParam[1] : enc(r.path[name] ?? newId())));
  const qs: string[] = [];
  for (const [k, v] of Object.entries(r.query)) {
    if (v === undefined) continue;
    for (const item of Array.isArray(v) ? v : [v]) qs.push(`${enc(k)}=${enc(item)}`);
  }
  if (r.rawQuery) qs.push(r.rawQuery);
  if (qs.length > 0) url += `?${qs.join('&')}`;
  const headers: Record<string, string> = { ...r.headers, authorization: `Bearer ${isScim(op) ? scimToken : r.auth === 'session' ? creds.session : creds.apiKey}` };
  let payload: string | undefined;
  if (r.rawBody !== undefined) {
    payload = r.rawBody;
    headers['content-type'] = r.contentType ?? 'application/json';
  } else if (r.body !== undefined) {
    payload = JSON.stringify(r.body);
    headers['content-type'] = 'application/json';
  }
  return { method: op.method as never, url, headers, ...(payload !== undefined ? { payload } : {}) };
}

async function send(op: Operation, r: Req) {
  const request = toInject(op, r);
  const res = await t.app.inject(request);
  const where = `${op.method} ${op.path}: ${request.method} ${request.url.slice(0, 300)} ${String(request.payload ?? '').slice(0, 300)} → ${res.statusCode} ${res.body.slice(0, 500)}`;
  expect(res.statusCode, where).toBeLessThan(500);
  const requestId = res.headers['x-request-id'];
  expect(requestId, where).toBeTruthy();
  // A URL the kernel refuses before routing (bad percent-encoding, an over-long parameter) is problem+json.
  const beforeRouting = String(res.headers['content-type']).startsWith('application/problem+json') && ['HTTP.BAD_URL', 'HTTP.PARAM_TOO_LONG'].includes(res.json().code);
  if (res.statusCode >= 400 && isScim(op) && !beforeRouting) {
    expect(res.headers['content-type'], where).toMatch(/^application\/scim\+json/);
    expect(res.json(), where).toMatchObject({ schemas: ['urn:ietf:params:scim:api:messages:2.0:Error'], status: String(res.statusCode), detail: expect.any(String) });
  } else if (res.statusCode >= 400) {
    expect(res.headers['content-type'], where).toMatch(/^application\/problem\+json/);
    const problem = res.json();
    // A replayed Idempotency-Key response is the stored one, with the first request's id in its body.
    const replayed = res.headers['idempotent-replayed'] === 'true';
    expect(problem, where).toMatchObject({ status: res.statusCode, code: expect.any(String), requestId: replayed ? expect.any(String) : requestId });
  }
  for (const marker of bMarkers) expect(res.body.includes(marker), `org B's ${marker} leaked: ${where}`).toBe(false);
  // The fuzz may log A out, revoke its sessions or its key: get new ones so later cases stay authenticated.
  if (res.statusCode < 400 && op.method !== 'GET') {
    for (const kind of ['session', 'apiKey'] as const) {
      const probe = await t.app.inject({ url: kind === 'session' ? '/v1/me' : `/v1/orgs/${a.owner.orgId}`, headers: bearer(creds[kind]) });
      if (probe.statusCode === 401) await creds.renew(kind);
    }
  }
}

describe(`schema-driven fuzz of every operation in /openapi.json (seed ${SEED}, ${RUNS}+${RUNS} cases each)`, () => {
  it('covers every registered /v1 route', () => {
    const documented = new Set(operations.map((o) => `${o.method} ${o.path.replace(/\{([^}]+)\}/g, ':$1')}`));
    const registered = t.app.registeredRoutes.filter((r) => r.url.startsWith('/v1') && !r.schema?.hide).map((r) => `${r.method} ${r.url}`);
    expect(registered.filter((r) => !documented.has(r))).toEqual([]);
    expect(operations.length).toBeGreaterThan(20);
  });

  for (const op of operations) {
    it(`${op.method} ${op.path}`, async () => {
      // Systematic first: each field, query and path parameter once with NUL, a lone surrogate and an impossible date.
      const [base] = fc.sample(validRequest(op), { seed: SEED, numRuns: 1 });
      for (const bad of SWEEP) {
        for (const f of Object.keys(op.body?.properties ?? {})) await send(op, { ...base!, body: { ...(base!.body as object), [f]: bad } });
        for (const p of op.params.filter((x) => x.in === 'query')) await send(op, { ...base!, query: { ...base!.query, [p.name]: bad } });
        for (const p of op.params.filter((x) => x.in === 'path')) await send(op, { ...base!, path: { ...base!.path, [p.name]: bad } });
      }
      await fc.assert(fc.asyncProperty(validRequest(op), (r) => send(op, r)), { seed: SEED, numRuns: RUNS, endOnFailure: true });
      await fc.assert(fc.asyncProperty(mutated(op), (r) => send(op, r)), { seed: SEED + 1, numRuns: RUNS, endOnFailure: true });
    });
  }
});
