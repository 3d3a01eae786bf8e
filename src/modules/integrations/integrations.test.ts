import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { addMember, signup, type SignedUp } from '../../../test/helpers/auth.ts';
import { createTestPlatform, type TestPlatform } from '../../../test/helpers/test-platform.ts';
import { applyTemplate } from './connectors/http.ts';
import { parseRetryAfter } from './integrations.connector.ts';
import { urlRuleProblem } from './integrations.url-rules.ts';

/**
 * Managing connections over HTTP on the real composition: permissions, validation against each
 * connector's declared schema, credentials encrypted at rest and never returned, audit, tenant isolation.
 * (Deliveries through the vendor SDKs: integrations.delivery.test.ts.)
 */
let t: TestPlatform;
let owner: SignedUp;
let admin: SignedUp;
let member: SignedUp;
let other: SignedUp;

beforeAll(async () => {
  t = await createTestPlatform();
  owner = await signup(t.app);
  other = await signup(t.app);
  admin = await signup(t.app);
  member = await signup(t.app);
  await addMember(t.app, owner, owner.orgId, admin, 'admin');
  await addMember(t.app, owner, owner.orgId, member, 'member');
}, 120_000);
afterAll(async () => t?.close());

const url = (org: string, rest = '') => `/v1/orgs/${org}/integrations${rest}`;
function call(who: SignedUp, method: string, path: string, payload?: unknown) {
  return t.app.inject({ method: method as any, url: path, headers: who.auth, ...(payload !== undefined ? { payload: payload as any } : {}) });
}
const valid = {
  connector: 'posthog',
  name: 'Product analytics',
  config: { host: 'http://127.0.0.1:9' },
  credentials: { projectApiKey: 'phc_very_secret_key_123' },
  events: ['projects.project_created', 'billing.subscription_created'],
};

describe('integration connections', () => {
  it('creates, reads, updates and deletes a connection; credentials are sealed at rest and never returned', async () => {
    const created = await call(admin, 'POST', url(owner.orgId), valid);
    expect(created.statusCode, created.body).toBe(201);
    const c = created.json();
    expect(c).toMatchObject({
      connector: 'posthog',
      name: 'Product analytics',
      config: { host: 'http://127.0.0.1:9' },
      events: valid.events,
      active: true,
      lastSuccessAt: null,
      lastError: null,
      backfillStatus: 'idle',
      health: { backlog: 0, deadLetters: 0, breaker: 'closed' },
    });
    expect(created.headers.location).toBe(url(owner.orgId, `/${c.id}`));

    const reads = [
      created,
      await call(owner, 'GET', url(owner.orgId, `/${c.id}`)),
      await call(owner, 'GET', url(owner.orgId)),
      await call(owner, 'PATCH', url(owner.orgId, `/${c.id}`), { credentials: { projectApiKey: 'phc_rotated_secret_456' }, name: 'Renamed' }),
      await call(owner, 'GET', `/v1/orgs/${owner.orgId}/audit-events?limit=100`),
    ];
    for (const r of reads) {
      expect(r.statusCode, r.body).toBe(200 + (r === created ? 1 : 0));
      expect(r.body).not.toContain('phc_very_secret');
      expect(r.body).not.toContain('phc_rotated_secret');
    }
    expect(reads[3]!.json().name).toBe('Renamed');
    expect(reads[4]!.json().data.map((e: any) => e.action)).toEqual(expect.arrayContaining(['integrations.connection.created', 'integrations.connection.updated']));

    const row = await t.db.owner.selectFrom('integration_connections').select('credentials_ciphertext').where('id', '=', c.id).executeTakeFirstOrThrow();
    expect(row.credentials_ciphertext).toMatch(/^v1\./);
    expect(row.credentials_ciphertext).not.toContain('phc_');

    const connectors = await call(owner, 'GET', url(owner.orgId, '/connectors'));
    expect(connectors.statusCode).toBe(200);
    expect(connectors.json().data.map((x: any) => x.name).sort()).toEqual(['http', 'posthog', 'segment']);

    expect((await call(owner, 'DELETE', url(owner.orgId, `/${c.id}`))).statusCode).toBe(204);
    expect((await call(owner, 'GET', url(owner.orgId, `/${c.id}`))).statusCode).toBe(404);
  });

  it('refuses bad input with problem+json: unknown connector, config or credentials off the schema, events the connector does not consume, forbidden URLs, duplicate names', async () => {
    const cases: Array<[object, number, string]> = [
      [{ ...valid, connector: 'salesforce' }, 400, 'INTEGRATIONS.UNKNOWN_CONNECTOR'],
      [{ ...valid, config: { host: 'http://127.0.0.1:9', extra: 1 } }, 400, 'INTEGRATIONS.INVALID_CONFIG'],
      [{ ...valid, credentials: {} }, 400, 'INTEGRATIONS.INVALID_CONFIG'],
      [{ ...valid, events: ['projects.project_deleted_forever'] }, 400, 'INTEGRATIONS.INVALID_CONFIG'],
      [{ ...valid, connector: 'http', config: { url: 'http://10.0.0.5/hook' }, credentials: {} }, 400, 'INTEGRATIONS.INVALID_CONFIG'],
      [{ ...valid, config: { host: 'ftp://example.com' } }, 400, 'INTEGRATIONS.INVALID_CONFIG'],
      [{ ...valid, name: '' }, 400, 'VALIDATION'],
      [{ ...valid, surprise: true }, 400, 'VALIDATION'],
    ];
    for (const [body, status, code] of cases) {
      const res = await call(owner, 'POST', url(owner.orgId), body);
      expect(res.statusCode, `${JSON.stringify(body)} → ${res.body}`).toBe(status);
      expect(res.headers['content-type']).toContain('application/problem+json');
      if (!code.startsWith('VALIDATION')) expect(res.json().code).toBe(code);
      expect(res.body).not.toContain('phc_very_secret');
    }
    expect((await call(owner, 'POST', url(owner.orgId), { ...valid, name: 'Twice' })).statusCode).toBe(201);
    const dup = await call(owner, 'POST', url(owner.orgId), { ...valid, name: 'Twice' });
    expect(dup.statusCode).toBe(409);
    expect(dup.json().code).toBe('INTEGRATIONS.NAME_TAKEN');
  });

  it('is for admins: a member gets 403; another org gets 404 for this org’s connection', async () => {
    const c = (await call(owner, 'POST', url(owner.orgId), { ...valid, name: 'Admins only' })).json();
    expect((await call(member, 'GET', url(owner.orgId))).statusCode).toBe(403);
    expect((await call(member, 'POST', url(owner.orgId), valid)).statusCode).toBe(403);
    expect((await call(other, 'GET', url(other.orgId, `/${c.id}`))).statusCode).toBe(404);
    expect((await call(other, 'PATCH', url(other.orgId, `/${c.id}`), { active: false })).statusCode).toBe(404);
    expect((await call(other, 'POST', url(other.orgId, `/${c.id}/replay`), {})).statusCode).toBe(404);
    expect((await call(other, 'POST', url(other.orgId, `/${c.id}/backfill`), {})).statusCode).toBe(404);
    expect((await call(other, 'GET', url(other.orgId))).json().data).toEqual([]);
  });
});

describe('connector helpers', () => {
  it('maps events through a JSON template: whole placeholders keep their type, embedded ones interpolate, unknown paths are null', () => {
    const e = { id: 'e1', name: 'projects.task_created', tenantId: 'org1', occurredAt: '2026-01-01T00:00:00.000Z', payload: { number: 7, tags: ['a'] } };
    expect(applyTemplate({ n: '{{payload.number}}', t: '{{payload.tags}}', s: '#{{payload.number}} in {{event.tenantId}}', x: '{{payload.none}}', k: [1, '{{event.id}}'] }, e)).toEqual({
      n: 7,
      t: ['a'],
      s: '#7 in org1',
      x: null,
      k: [1, 'e1'],
    });
  });

  it('reads Retry-After as seconds or an HTTP date', () => {
    expect(parseRetryAfter('3')).toBe(3000);
    expect(parseRetryAfter(new Date(Date.now() + 10_000).toUTCString())).toBeGreaterThan(8_000);
    expect(parseRetryAfter('soon')).toBeUndefined();
    expect(parseRetryAfter(null)).toBeUndefined();
  });

  it('applies the webhook SSRF rules: strict mode refuses http and private or loopback addresses', async () => {
    expect(await urlRuleProblem('http://127.0.0.1:8080/x', { strict: false })).toBeNull();
    expect(await urlRuleProblem('http://example.com/x', { strict: false })).toMatch(/https/);
    expect(await urlRuleProblem('http://127.0.0.1/x', { strict: true })).toMatch(/https/);
    expect(await urlRuleProblem('https://10.1.2.3/x', { strict: true })).toMatch(/private/);
    expect(await urlRuleProblem('https://[::1]/x', { strict: true })).toMatch(/private/);
    expect(await urlRuleProblem('https://169.254.169.254/latest', { strict: true })).toMatch(/private/);
    expect(await urlRuleProblem('https://user:pw@93.184.216.34/', { strict: true })).toMatch(/credentials/);
    expect(await urlRuleProblem('https://93.184.216.34/x', { strict: true })).toBeNull();
  });
});
