import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestPlatform, type TestPlatform } from '../../../test/helpers/test-platform.ts';
import { createModules } from '../../main.ts';
import type { Authenticator } from './auth.ts';
import { asPlugin } from './module-routes.ts';
import type { App } from './server.ts';

const ORG_A = '0190a4c2-0000-7000-8000-00000000000a';
const ORG_B = '0190a4c2-0000-7000-8000-00000000000b';
const authenticator: Authenticator = {
  async authenticate(req) {
    const token = req.headers.authorization;
    if (token === 'Bearer operator') return { kind: 'user', userId: '0190a4c2-0000-7000-8000-0000000000aa', isPlatformAdmin: true };
    if (token === 'Bearer member') return { kind: 'user', userId: '0190a4c2-0000-7000-8000-0000000000bb', isPlatformAdmin: false };
    return null;
  },
  resolveAccess: async (_p, orgId) => ({ orgId, role: 'member', permissions: new Set(['things:read']) }),
};
const member = { authorization: 'Bearer member' };

const routes = asPlugin(async (app: App) => {
  app.get('/v1/orgs/:orgId/old-things', {
    config: { permission: 'things:read', deprecated: { since: '2026-12-01', sunset: '2027-06-01', link: 'https://docs.example.com/migrate/things' } },
    schema: { summary: 'Old things', operationId: 'listOldThings' },
  }, async () => ({ ok: true }));
  app.get('/v1/orgs/:orgId/new-things', { config: { permission: 'things:read' }, schema: { operationId: 'listNewThings' } }, async () => ({ ok: true }));
});

describe('deprecated operations (RFC 9745 Deprecation, RFC 8594 Sunset)', () => {
  let p: TestPlatform;
  beforeAll(async () => {
    p = await createTestPlatform({
      authenticator,
      compose: (platform) => {
        const m = createModules(platform);
        return { ...m, routes: [...m.routes, { name: 'things', prefix: '', plugin: routes }] };
      },
    });
  });
  afterAll(async () => p?.close());

  it('answers with Deprecation, Sunset and a Link to the migration note; a current operation has none', async () => {
    const old = await p.app.inject({ url: `/v1/orgs/${ORG_A}/old-things`, headers: member });
    expect(old.statusCode).toBe(200);
    expect(old.headers.deprecation).toBe(`@${Date.parse('2026-12-01') / 1000}`);
    expect(old.headers.sunset).toBe('Tue, 01 Jun 2027 00:00:00 GMT');
    expect(old.headers.link).toBe('<https://docs.example.com/migrate/things>; rel="deprecation"; type="text/html"');
    const current = await p.app.inject({ url: `/v1/orgs/${ORG_A}/new-things`, headers: member });
    expect(current.headers.deprecation).toBeUndefined();
    expect(current.headers.sunset).toBeUndefined();
  });

  it('is marked deprecated in the OpenAPI document, with the sunset and the link', async () => {
    const doc = (await p.app.inject({ url: '/openapi.json' })).json();
    const op = doc.paths['/v1/orgs/{orgId}/old-things'].get;
    expect(op.deprecated).toBe(true);
    expect(op.description).toContain('removed on 2027-06-01');
    expect(op['x-sunset']).toBe('2027-06-01');
    expect(op.description).toContain('https://docs.example.com/migrate/things');
    expect(doc.paths['/v1/orgs/{orgId}/new-things'].get.deprecated).toBeUndefined();
  });

  it('counts calls per org for operators, who alone may see them', async () => {
    await p.app.inject({ url: `/v1/orgs/${ORG_A}/old-things`, headers: member });
    await p.app.inject({ url: `/v1/orgs/${ORG_B}/old-things`, headers: member });
    const res = await p.app.inject({ url: '/v1/admin/deprecations', headers: { authorization: 'Bearer operator' } });
    expect(res.statusCode).toBe(200);
    const [entry] = res.json().data;
    expect(entry).toMatchObject({ method: 'GET', route: '/v1/orgs/:orgId/old-things', sunset: '2027-06-01' });
    expect(entry.orgs).toEqual([
      { orgId: ORG_A, requests: 2, lastSeenAt: expect.any(String) },
      { orgId: ORG_B, requests: 1, lastSeenAt: expect.any(String) },
    ]);
    expect((await p.app.inject({ url: '/v1/admin/deprecations', headers: member })).statusCode).toBe(403);
    expect((await p.app.inject({ url: '/v1/admin/deprecations?days=0', headers: { authorization: 'Bearer operator' } })).statusCode).toBe(400);
    const metrics = await p.app.inject({ url: '/metrics' });
    expect(metrics.body).toMatch(/plinth_deprecated_requests_total\{method="GET",route="\/v1\/orgs\/:orgId\/old-things"\} [1-9]/);
  });
});
