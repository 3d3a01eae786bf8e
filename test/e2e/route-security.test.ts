import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AUTHENTICATED, PLATFORM_ADMIN } from '../../src/platform/http/auth.ts';
import type { RegisteredRoute } from '../../src/platform/http/server.ts';
import { newId } from '../../src/platform/ids.ts';
import { ALL_PERMISSIONS } from '../../src/modules/tenancy/index.ts';
import { addMember, signup, type SignedUp } from '../helpers/auth.ts';
import { createSoftAuthenticator } from '../helpers/webauthn.ts';
import { createTestPlatform, type TestPlatform } from '../helpers/test-platform.ts';

/**
 * Walks every registered /v1 route, so routes other modules add later are covered without editing
 * this file — unless they introduce a new path parameter, in which case the matrix fails and asks for
 * a fixture below (one line: how org B gets such an id).
 */

/** Reachable without a credential. Anything else under /v1 must declare a permission. */
const PUBLIC_ROUTES = new Set([
  'POST /v1/auth/signup',
  'POST /v1/auth/login',
  // The second step of a sign-in with MFA: the challenge token from /auth/login is its credential.
  'POST /v1/auth/login/mfa',
  // Its passkey options: the same challenge token is the credential (options are bound to it).
  'POST /v1/auth/login/mfa/webauthn-options',
  // Passwordless sign-in with a passkey: options (a stored challenge), then the signed assertion is the credential.
  // Attacks (replay, origin, other user's credential, counter) are tested in src/modules/identity/identity.webauthn.test.ts.
  'POST /v1/auth/passkey/options',
  'POST /v1/auth/passkey',
  // SSO: the browser arrives without a credential; each checks its own proof (state, signed assertion).
  // Their cross-tenant behaviour is tested in src/modules/sso/sso.saml.test.ts ("another org's ids").
  'GET /v1/sso/:orgId/:connectionId/start',
  'GET /v1/sso/oidc/callback',
  'GET /v1/sso/saml/:orgId/:connectionId/metadata',
  'POST /v1/sso/saml/:orgId/:connectionId/acs',
  // Vendor webhooks: the vendor's signature (verified before anything is stored) is the authentication.
  'POST /v1/hooks/integrations/:orgId/:integrationId',
  // Payment-gateway webhooks: the gateway's signature over the raw body (Stripe-Signature / Sandbox-Signature)
  // is the authentication; the org comes from the signed payload. See the payment-webhooks test below.
  'POST /v1/webhooks/payments/:gateway',
]);

interface OrgB {
  owner: SignedUp;
  member: SignedUp;
  ids: Record<string, string>;
}

/**
 * How to obtain, for org B, a value of each path parameter. Add one when a route introduces a new
 * parameter (e.g. `projectId: async (app, b) => (await app.inject({...})).json().id`).
 */
const FIXTURES: Record<string, (t: TestPlatform, b: { owner: SignedUp; member: SignedUp }) => Promise<string>> = {
  orgId: async (_t, b) => b.owner.orgId,
  userId: async (_t, b) => b.member.userId,
  invitationId: async (t, b) => (await inject(t, b.owner, 'POST', `/v1/orgs/${b.owner.orgId}/invitations`, { email: 'pending-b@example.com', role: 'viewer' })).id,
  token: async (t, b) => (await inject(t, b.owner, 'POST', `/v1/orgs/${b.owner.orgId}/invitations`, { email: 'pending-b2@example.com', role: 'admin' })).token,
  keyId: async (t, b) => (await inject(t, b.owner, 'POST', `/v1/orgs/${b.owner.orgId}/api-keys`, { name: 'B key', scopes: ['org:read'] })).id,
  sessionId: async (t, b) => (await t.app.inject({ url: '/v1/me/sessions', headers: b.member.auth })).json().data[0].id,
  // A passkey of B's member, registered through the real ceremony (a software authenticator).
  credentialId: async (t, b) => {
    const options = await inject(t, b.member, 'POST', '/v1/me/mfa/webauthn/registration-options');
    const response = createSoftAuthenticator().create(options, { origin: t.config.webauthn.origins[0]! });
    return (await inject(t, b.member, 'POST', '/v1/me/mfa/webauthn/credentials', { name: 'B key', response })).credential.id;
  },
  key: async () => 'isolation-flag',
  projectId: async (t, b) => (await inject(t, b.owner, 'POST', `/v1/orgs/${b.owner.orgId}/projects`, { key: 'BSECRET', name: 'B project' })).id,
  connectionId: async (t, b) =>
    (await inject(t, b.owner, 'POST', `/v1/orgs/${b.owner.orgId}/sso/connections`, { name: 'B IdP', defaultRole: 'member', oidc: { issuer: 'https://idp.b.example', clientId: 'b-client', clientSecret: 'b-secret' } })).id,
  domainId: async (t, b) => (await inject(t, b.owner, 'POST', `/v1/orgs/${b.owner.orgId}/domains`, { domain: 'b-secret.example' })).id,
  // POST /v1/admin/jobs/:id/redrive (operator route: any dead-job id; org A's token gets 403 before lookup)
  id: async () => newId(),
  // /v1/admin/billing/plans/:planId/… (operator routes: org A's token gets 403 before lookup)
  planId: async () => newId(),
  // PUT …/billing/subscription/addons/:addonId: add-ons are catalog items (global); org B has none on a subscription
  addonId: async () => newId(),
  taskId: async (t, b) => {
    const project = await inject(t, b.owner, 'POST', `/v1/orgs/${b.owner.orgId}/projects`, { key: 'BTASKS', name: 'B tasks' });
    const task = await inject(t, b.member, 'POST', `/v1/orgs/${b.owner.orgId}/projects/${project.id}/tasks`, { title: 'B task', assigneeId: b.member.userId });
    await inject(t, b.member, 'POST', `/v1/orgs/${b.owner.orgId}/tasks/${task.id}/comments`, { body: 'B comment' });
    return task.id;
  },
  exportId: async (t, b) => (await inject(t, b.owner, 'POST', `/v1/orgs/${b.owner.orgId}/exports`, { resource: 'tasks', format: 'csv' })).id,
  // A report name is not an object of org B: it names the same report in every org (see NOT_OBJECT_IDS).
  name: async () => 'active-members',
  // Likewise a billing report's name (GET /v1/orgs/:orgId/reports/billing/:report, /v1/admin/reports/billing/:report).
  report: async () => 'mrr',
  tokenId: async (t, b) => (await inject(t, b.owner, 'POST', `/v1/orgs/${b.owner.orgId}/scim-tokens`, { name: 'B IdP' })).id,
  webhookId: async (t, b) => (await inject(t, b.owner, 'POST', `/v1/orgs/${b.owner.orgId}/webhooks`, { url: 'http://127.0.0.1:9/b', events: ['projects.task_created'] })).id,
  integrationId: async (t, b) =>
    (await inject(t, b.owner, 'POST', `/v1/orgs/${b.owner.orgId}/integrations`, { connector: 'http', name: 'B sync', config: { url: 'http://127.0.0.1:9/b' }, credentials: {}, events: ['projects.task_created'] })).id,
  // A finalized invoice of org B (written as billing's finalization does, under B's tenant context).
  invoiceId: async (t, b) => {
    const id = newId();
    await t.db.withTenant(b.owner.orgId, (trx) =>
      trx
        .insertInto('billing_invoices')
        .values({ tenant_id: b.owner.orgId, id, seq: 1, number: 'B-00001', status: 'finalized', reason: 'manual', currency: 'USD', period_start: new Date(), period_end: new Date(), usage_cutoff: new Date(), total: 100, amount_due: 100 })
        .execute(),
    );
    return id;
  },
  // A delivery row of org B (written as the worker's fan-out does, under B's tenant context).
  deliveryId: async (t, b) => {
    const hook = await inject(t, b.owner, 'POST', `/v1/orgs/${b.owner.orgId}/webhooks`, { url: 'http://127.0.0.1:9/b2', events: ['projects.task_created'] });
    const id = newId();
    await t.db.withTenant(b.owner.orgId, (trx) =>
      trx.insertInto('webhook_deliveries').values({ tenant_id: b.owner.orgId, id, webhook_id: hook.id, event_id: newId(), event_type: 'projects.task_created', body: '{}', status: 'failed' }).execute(),
    );
    return id;
  },
};


async function inject(t: TestPlatform, who: SignedUp, method: string, url: string, payload?: object) {
  const res = await t.app.inject({ method: method as any, url, headers: who.auth, ...(payload ? { payload } : {}) });
  if (res.statusCode >= 300) throw new Error(`${method} ${url}: ${res.statusCode} ${res.body}`);
  return res.json();
}

/** Path parameters that name something every org has (a report), not an object of org B. */
const NOT_OBJECT_IDS = new Set(['orgId', 'name', 'report']);

/** A minimal body that passes the route's schema, so the request reaches authorization. */
function sample(schema: any): unknown {
  if (!schema) return undefined;
  if (schema.default !== undefined) return schema.default;
  if (schema.const !== undefined) return schema.const;
  if (schema.anyOf) return sample(schema.anyOf.find((s: any) => s.type !== 'null') ?? schema.anyOf[0]);
  if (schema.enum) return schema.enum[0];
  switch (schema.type) {
    case 'object': {
      const out: Record<string, unknown> = {};
      for (const k of schema.required ?? []) out[k] = sample(schema.properties[k]);
      // e.g. PATCH bodies that need at least one field
      for (const k of Object.keys(schema.properties ?? {})) {
        if (Object.keys(out).length >= (schema.minProperties ?? 0)) break;
        out[k] = sample(schema.properties[k]);
      }
      return out;
    }
    case 'string':
      if (schema.format === 'email') return 'isolation@example.com';
      if (schema.format === 'uuid') return newId();
      if (schema.format === 'date-time') return new Date(Date.now() + 86_400_000).toISOString();
      if (schema.pattern) {
        // e.g. a project key '^[A-Z][A-Z0-9]{1,9}$': the first simple candidate the pattern accepts
        const fits = ['x', 'ISO', 'ISO1', 'iso-1', '1'].find((c) => new RegExp(schema.pattern).test(c) && c.length >= (schema.minLength ?? 0));
        if (fits) return fits;
      }
      return 'x'.repeat(Math.max(schema.minLength ?? 1, 1));
    case 'integer':
    case 'number':
      return schema.minimum ?? 1;
    case 'boolean':
      return true;
    case 'array':
      return Array.from({ length: schema.minItems ?? 0 }, () => sample(schema.items));
    default:
      return null;
  }
}

const paramsOf = (url: string) => [...url.matchAll(/:([A-Za-z0-9_]+)/g)].map((m) => m[1]!);
const fill = (url: string, values: Record<string, string>) => url.replace(/:([A-Za-z0-9_]+)/g, (_, p: string) => encodeURIComponent(values[p] ?? `missing-${p}`));
const v1Routes = (t: TestPlatform) => t.app.registeredRoutes.filter((r: RegisteredRoute) => r.url.startsWith('/v1'));

describe(`route security: declarations and cross-tenant isolation (${process.env.TEST_DATABASE_URL ? 'postgres' : 'pglite'})`, () => {
  let t: TestPlatform;
  let a: SignedUp;
  let b: OrgB;

  beforeAll(async () => {
    // The walk itself is hundreds of refused requests from one address: not what the per-IP auth-failure limit is for.
    t = await createTestPlatform({ env: { RATE_LIMIT_AUTH_FAILURES: '100000' } });
    a = await signup(t.app, { organizationName: 'Org A' });
    const bOwner = await signup(t.app, { organizationName: 'Org B Secret Name' });
    const bMember = await signup(t.app, { name: 'B Member' });
    await addMember(t.app, bOwner, bOwner.orgId, bMember, 'member');
    const ids: Record<string, string> = {};
    const needed = new Set(v1Routes(t).flatMap((r) => paramsOf(r.url)));
    for (const p of needed) {
      const fixture = FIXTURES[p];
      if (fixture) ids[p] = await fixture(t, { owner: bOwner, member: bMember });
    }
    b = { owner: bOwner, member: bMember, ids };
  });
  afterAll(async () => t?.close());

  it('every /v1 route declares a known permission or is on the explicit public list, and is documented with security and a success response', async () => {
    const known = new Set<string>([...ALL_PERMISSIONS, AUTHENTICATED, PLATFORM_ADMIN]);
    const routes = v1Routes(t);
    expect(routes.length).toBeGreaterThan(20);
    const problems: string[] = [];
    const spec = t.app.swagger() as any;
    const operation = (r: RegisteredRoute) => spec.paths?.[r.url.replace(/:([A-Za-z0-9_]+)/g, '{$1}')]?.[r.method.toLowerCase()];
    for (const r of routes) {
      const id = `${r.method} ${r.url}`;
      if (r.config.public) {
        if (!PUBLIC_ROUTES.has(id)) problems.push(`${id} is public but not on the public list`);
        continue;
      }
      if (!r.config.permission) problems.push(`${id} declares no permission`);
      else if (!known.has(r.config.permission)) problems.push(`${id} declares unknown permission ${r.config.permission}`);
      const op = operation(r);
      if (!op) problems.push(`${id} is missing from the OpenAPI document`);
      else if (!op.security?.some((s: any) => 'bearer' in s)) problems.push(`${id} has no bearer security in OpenAPI`);
    }
    for (const r of routes) {
      const op = operation(r);
      if (op && !Object.keys(op.responses ?? {}).some((code) => /^2\d\d$/.test(code))) problems.push(`${r.method} ${r.url} documents no success response`);
    }
    expect(problems).toEqual([]);
  });

  it("org A's token × org B's ids: every route answers 404 (403 for operator routes), leaks nothing, changes nothing", async () => {
    const routes = v1Routes(t).filter((r) => !r.config.public && paramsOf(r.url).length > 0);
    const missing = [...new Set(routes.flatMap((r) => paramsOf(r.url)).filter((p) => !(p in b.ids)))];
    expect(missing, `add an org-B fixture for these path parameters in FIXTURES: ${missing.join(', ')}`).toEqual([]);

    const snapshot = () => readAllAsB();
    const before = await snapshot();
    const secrets = [b.owner.orgId, b.member.userId, b.owner.userId, 'Org B Secret Name', b.owner.email, b.member.email, ...Object.values(b.ids).filter((v) => v.length > 20)];
    const failures: string[] = [];

    for (const r of routes) {
      const params = paramsOf(r.url);
      const variants: Array<{ label: string; values: Record<string, string> }> = [{ label: 'B org + B ids', values: { ...b.ids } }];
      // Same route inside A's own org, but pointing at B's objects.
      if (params.includes('orgId') && params.some((p) => !NOT_OBJECT_IDS.has(p))) variants.push({ label: 'A org + B ids', values: { ...b.ids, orgId: a.orgId } });
      for (const v of variants) {
        const url = fill(r.url, v.values);
        const payload = ['POST', 'PUT', 'PATCH'].includes(r.method) ? (sample(r.schema?.body) ?? {}) : undefined;
        const res = await t.app.inject({ method: r.method as any, url, headers: a.auth, ...(payload !== undefined ? { payload: payload as object } : {}) });
        const expected = r.config.permission === PLATFORM_ADMIN ? [403] : params.includes('token') ? [403, 404] : [404];
        if (!expected.includes(res.statusCode)) failures.push(`${r.method} ${r.url} [${v.label}] → ${res.statusCode} ${res.body.slice(0, 200)}`);
        const leaked = secrets.filter((s) => res.body.includes(s));
        if (leaked.length > 0) failures.push(`${r.method} ${r.url} [${v.label}] leaked ${leaked.join(', ')}`);
      }
    }

    // List filters: A's lists filtered by B's ids return nothing of B.
    for (const r of v1Routes(t).filter((x) => x.method === 'GET' && paramsOf(x.url).join() === 'orgId' && (x.schema?.querystring as any)?.properties)) {
      const props = Object.keys((r.schema!.querystring as any).properties).filter((k) => /id$/i.test(k));
      for (const prop of props) {
        for (const value of [b.member.userId, b.owner.userId, b.owner.orgId, ...Object.values(b.ids)]) {
          const res = await t.app.inject({ url: `${fill(r.url, { orgId: a.orgId })}?${prop}=${encodeURIComponent(value)}`, headers: a.auth });
          if (res.statusCode === 200 && res.json().data?.length) failures.push(`${r.url}?${prop}=<B id> returned ${res.json().data.length} rows`);
          if (secrets.some((s) => res.body.includes(s) && s !== value)) failures.push(`${r.url}?${prop}=<B id> leaked B data`);
        }
      }
    }

    expect(failures).toEqual([]);
    expect(await snapshot()).toEqual(before);
    // B's credentials still work.
    expect((await t.app.inject({ url: '/v1/me', headers: b.member.auth })).statusCode).toBe(200);
    expect((await t.app.inject({ url: `/v1/orgs/${b.owner.orgId}`, headers: b.owner.auth })).statusCode).toBe(200);
  }, 180_000);

  it('payment webhooks: public, yet a credential is no substitute for the signature — 400 problem+json, nothing stored; an unconfigured gateway is 404', async () => {
    const event = { id: 'evt_isolation', object: 'event', type: 'payment_intent.succeeded', created: Math.floor(Date.now() / 1000), data: { object: { id: 'pi_isolation', object: 'payment_intent', amount: 1, currency: 'eur', status: 'succeeded', metadata: { orgId: b.owner.orgId } } } };
    const failures: string[] = [];
    for (const [label, headers, gateway, expected] of [
      ["org A's bearer token, no signature", a.auth, 'sandbox', 400],
      ["org B's owner token, no signature", b.owner.auth, 'sandbox', 400],
      ['a forged signature', { 'sandbox-signature': 't=1,v1=00' }, 'sandbox', 400],
      ['Stripe without a configured secret', { 'stripe-signature': 't=1,v1=00' }, 'stripe', 404],
    ] as const) {
      const res = await t.app.inject({ method: 'POST', url: `/v1/webhooks/payments/${gateway}`, payload: JSON.stringify(event), headers: { 'content-type': 'application/json', ...headers } });
      if (res.statusCode !== expected || !String(res.headers['content-type']).includes('application/problem+json')) failures.push(`${label} → ${res.statusCode} ${res.body.slice(0, 200)}`);
      if (res.body.includes(b.owner.orgId)) failures.push(`${label} echoed the org id`);
    }
    expect(failures).toEqual([]);
    expect(await t.db.owner.selectFrom('billing_payment_events').select('id').where('event_id', '=', 'evt_isolation').execute()).toEqual([]);
  });

  it("SCIM: org A's directory token × org B's path → 401, × B's ids on A's path → 404; never data, nothing changed", async () => {
    const scimRoutes = t.app.registeredRoutes.filter((r: RegisteredRoute) => r.url.startsWith('/scim/v2/'));
    expect(scimRoutes.length).toBeGreaterThanOrEqual(11);
    const tokenOf = async (who: SignedUp) => (await inject(t, who, 'POST', `/v1/orgs/${who.orgId}/scim-tokens`, { name: 'IdP' })).token as string;
    const aToken = await tokenOf(a);
    const bToken = await tokenOf(b.owner);
    const scim = (tok: string, method: string, url: string, payload?: object) =>
      t.app.inject({ method: method as any, url, headers: { authorization: `Bearer ${tok}`, 'content-type': 'application/scim+json' }, ...(payload ? { payload: JSON.stringify(payload) } : {}) });
    const bUser = (await scim(bToken, 'POST', `/scim/v2/${b.owner.orgId}/Users`, { userName: 'scim-b-secret@example.com' })).json();
    const bGroup = (await scim(bToken, 'POST', `/scim/v2/${b.owner.orgId}/Groups`, { displayName: 'B Secret Group', members: [{ value: bUser.id }] })).json();
    const bState = async () => [
      (await scim(bToken, 'GET', `/scim/v2/${b.owner.orgId}/Users`)).json(),
      (await scim(bToken, 'GET', `/scim/v2/${b.owner.orgId}/Groups`)).json(),
    ];
    const before = await bState();
    const secrets = [bUser.id, bGroup.id, 'scim-b-secret', 'B Secret Group', b.owner.orgId];
    const failures: string[] = [];
    for (const r of scimRoutes) {
      const id = r.url.includes('/Groups') ? bGroup.id : bUser.id;
      const payload = ['POST', 'PUT'].includes(r.method)
        ? { userName: 'x@example.com', displayName: 'x', active: false }
        : r.method === 'PATCH'
          ? { schemas: ['urn:ietf:params:scim:api:messages:2.0:PatchOp'], Operations: [{ op: 'replace', path: 'active', value: false }] }
          : undefined;
      const variants = [
        { label: "A token, B's org", url: fill(r.url, { orgId: b.owner.orgId, id }), token: aToken, expected: [401] },
        { label: "B token, A's org", url: fill(r.url, { orgId: a.orgId, id }), token: bToken, expected: [401] },
        { label: 'session token', url: fill(r.url, { orgId: b.owner.orgId, id }), token: b.owner.token, expected: [401] },
      ];
      if (r.url.includes(':id')) variants.push({ label: "A token, A's org, B's id", url: fill(r.url, { orgId: a.orgId, id }), token: aToken, expected: [404] });
      for (const v of variants) {
        const res = await scim(v.token, r.method, v.url, payload);
        if (!v.expected.includes(res.statusCode)) failures.push(`${r.method} ${r.url} [${v.label}] → ${res.statusCode} ${res.body.slice(0, 200)}`);
        if (res.statusCode >= 400 && !String(res.headers['content-type']).startsWith('application/scim+json')) failures.push(`${r.method} ${r.url} [${v.label}] answered ${res.headers['content-type']}`);
        const leaked = secrets.filter((s) => res.body.includes(s));
        if (leaked.length > 0) failures.push(`${r.method} ${r.url} [${v.label}] leaked ${leaked.join(', ')}`);
      }
    }
    expect(failures).toEqual([]);
    expect(await bState()).toEqual(before);
  });

  /** Everything B's owner can read through every GET route with B's ids: B's data, before and after. */
  async function readAllAsB(): Promise<Record<string, unknown>> {
    const out: Record<string, unknown> = {};
    for (const r of v1Routes(t).filter((x) => x.method === 'GET' && x.config.permission !== PLATFORM_ADMIN)) {
      const url = fill(r.url, b.ids);
      const res = await t.app.inject({ url, headers: b.owner.auth });
      out[r.url] = { status: res.statusCode, body: res.statusCode === 200 ? stripVolatile(res.json()) : res.json().code };
    }
    out['member /v1/me'] = stripVolatile((await t.app.inject({ url: '/v1/me', headers: b.member.auth })).json());
    return out;
  }
});

/** Fields that change by reading (session last-used times) are not B's data. */
function stripVolatile(value: any): any {
  if (Array.isArray(value)) return value.map(stripVolatile);
  if (value && typeof value === 'object') {
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(value)) if (k !== 'lastUsedAt' && k !== 'current') out[k] = stripVolatile(v);
    return out;
  }
  return value;
}

