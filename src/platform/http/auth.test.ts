import { pino } from 'pino';
import { describe, expect, it } from 'vitest';
import { loadConfig } from '../config.ts';
import { accessOf, AUTHENTICATED, PLATFORM_ADMIN, registerAuthorization, type Authenticator } from './auth.ts';
import { createHttpServer } from './server.ts';

const ORG = '0190a4c2-8f5e-7cc3-b5a8-3f1e3c0d9a11';
const authenticator: Authenticator = {
  async authenticate(req) {
    const token = req.headers.authorization?.replace(/^Bearer /, '');
    if (token === 'member' || token === 'admin') {
      return { kind: 'user', userId: token, isPlatformAdmin: token === 'admin' };
    }
    return null;
  },
  async resolveAccess(principal, orgId) {
    if (orgId !== ORG) return null;
    return { orgId, role: 'member', permissions: new Set(principal.userId === 'member' ? ['things:read'] : []) };
  },
};

async function build() {
  const app = await createHttpServer({ config: loadConfig({ NODE_ENV: 'test' }), logger: pino({ level: 'silent' }), lifecycle: { draining: false, closing: false } });
  registerAuthorization(app, authenticator);
  return app;
}

describe('route authorization contract', () => {
  it('401 without a credential, 404 for an org the caller is not in, 403 without the permission', async () => {
    const app = await build();
    app.get('/v1/orgs/:orgId/things', { config: { permission: 'things:read' } }, async (req) => ({ org: accessOf(req).orgId }));
    app.post('/v1/orgs/:orgId/things', { config: { permission: 'things:write' } }, async () => ({}));
    app.get('/v1/me', { config: { permission: AUTHENTICATED } }, async (req) => ({ id: req.principal?.userId }));
    app.get('/v1/admin/x', { config: { permission: PLATFORM_ADMIN } }, async () => ({ ok: true }));
    app.get('/v1/public', { config: { public: true } }, async () => ({ ok: true }));

    const anon = await app.inject({ url: `/v1/orgs/${ORG}/things` });
    expect(anon.statusCode).toBe(401);
    expect(anon.headers['www-authenticate']).toBe('Bearer');
    const bad = await app.inject({ url: `/v1/orgs/${ORG}/things`, headers: { authorization: 'Bearer forged' } });
    expect(bad.statusCode).toBe(401);
    const other = await app.inject({ url: '/v1/orgs/0190a4c2-0000-7000-8000-000000000000/things', headers: { authorization: 'Bearer member' } });
    expect(other.statusCode).toBe(404);
    expect(other.json().code).toBe('ORG.NOT_FOUND');
    const ok = await app.inject({ url: `/v1/orgs/${ORG}/things`, headers: { authorization: 'Bearer member' } });
    expect(ok.json()).toEqual({ org: ORG });
    const forbidden = await app.inject({ method: 'POST', url: `/v1/orgs/${ORG}/things`, headers: { authorization: 'Bearer member' }, payload: {} });
    expect(forbidden.statusCode).toBe(403);
    expect(forbidden.json()).toMatchObject({ code: 'AUTH.FORBIDDEN', permission: 'things:write' });
    expect((await app.inject({ url: '/v1/me', headers: { authorization: 'Bearer member' } })).json()).toEqual({ id: 'member' });
    expect((await app.inject({ url: '/v1/admin/x', headers: { authorization: 'Bearer member' } })).statusCode).toBe(403);
    expect((await app.inject({ url: '/v1/admin/x', headers: { authorization: 'Bearer admin' } })).statusCode).toBe(200);
    expect((await app.inject({ url: '/v1/public' })).statusCode).toBe(200);
    const malformedOrg = await app.inject({ url: '/v1/orgs/not-a-uuid/things', headers: { authorization: 'Bearer member' } });
    expect(malformedOrg.statusCode).toBe(404);
    await app.close();
  });

  it('authorizes before validating: no credential with a bad body is 401, a non-member with a bad body is 404', async () => {
    const app = await build();
    app.post('/v1/orgs/:orgId/things', {
      config: { permission: 'things:read' },
      schema: { body: { type: 'object', required: ['name'], properties: { name: { type: 'string' } }, additionalProperties: false } },
    }, async () => ({ ok: true }));
    const anon = await app.inject({ method: 'POST', url: `/v1/orgs/${ORG}/things`, payload: { wrong: 1 } });
    expect(anon.statusCode).toBe(401);
    const stranger = await app.inject({ method: 'POST', url: '/v1/orgs/0190a4c2-0000-7000-8000-000000000000/things', headers: { authorization: 'Bearer member' }, payload: { wrong: 1 } });
    expect(stranger.statusCode).toBe(404);
    const member = await app.inject({ method: 'POST', url: `/v1/orgs/${ORG}/things`, headers: { authorization: 'Bearer member' }, payload: { wrong: 1 } });
    expect(member.statusCode).toBe(400);
    await app.close();
  });

  it('refuses to register a /v1 route without a declaration, or an org permission without :orgId', async () => {
    const app = await build();
    expect(() => app.get('/v1/undeclared', async () => ({}))).toThrow(/declares neither/);
    expect(() => app.get('/v1/things', { config: { permission: 'things:read' } }, async () => ({}))).toThrow(/has no :orgId/);
    await app.close();
  });
});
