import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { bearer, signup, type SignedUp } from '../../../test/helpers/auth.ts';
import { startOidcIdp, type OidcIdp } from '../../../test/helpers/oidc-idp.ts';
import { createTestPlatform, type TestPlatform } from '../../../test/helpers/test-platform.ts';

const mode = `${process.env.TEST_DATABASE_URL ? 'postgres' : 'pglite'}${process.env.TEST_REDIS_URL ? '+redis' : ''}`;
const REDIRECT = 'http://127.0.0.1:3000/v1/sso/oidc/callback';
const DOMAIN = 'acme-oidc.test';

describe(`OIDC SSO against a real oidc-provider (${mode})`, () => {
  let t: TestPlatform;
  let owner: SignedUp;
  let idp: OidcIdp;
  let conn: { id: string; oidc: { redirectUri: string; hasClientSecret: boolean } };
  const txt = new Map<string, string[][]>();

  async function connect(clientId: string, clientSecret: string, issuer = idp.issuer) {
    const res = await t.app.inject({
      method: 'POST',
      url: `/v1/orgs/${owner.orgId}/sso/connections`,
      headers: owner.auth,
      payload: { name: `OIDC ${clientId}`, defaultRole: 'member', roleMapping: { 'plinth-admins': 'admin' }, oidc: { issuer, clientId, clientSecret } },
    });
    expect(res.statusCode, res.body).toBe(201);
    return res.json();
  }

  /** Start at the app, sign in at the IdP, come back: the callback query the browser would bring. */
  async function roundTrip(connectionId = conn.id): Promise<URL> {
    const start = await t.app.inject({ url: `/v1/sso/${owner.orgId}/${connectionId}/start` });
    expect(start.statusCode, start.body).toBe(302);
    return idp.authorize(start.headers.location as string, REDIRECT);
  }
  const callback = (back: URL) => t.app.inject({ url: `/v1/sso/oidc/callback${back.search}` });

  beforeAll(async () => {
    idp = await startOidcIdp([
      { clientId: 'plinth', clientSecret: 'plinth-secret-0123456789', redirectUri: REDIRECT },
      { clientId: 'other-app', clientSecret: 'other-secret-0123456789', redirectUri: REDIRECT },
    ]);
    t = await createTestPlatform({ seams: { resolveTxt: async (name) => txt.get(name) ?? [] } });
    owner = await signup(t.app, { organizationName: 'Acme OIDC' });
    const d = (await t.app.inject({ method: 'POST', url: `/v1/orgs/${owner.orgId}/domains`, headers: owner.auth, payload: { domain: DOMAIN } })).json();
    txt.set(d.txtRecord.name, [[d.txtRecord.value]]);
    expect((await t.app.inject({ method: 'POST', url: `/v1/orgs/${owner.orgId}/domains/${d.id}/verify`, headers: owner.auth })).statusCode).toBe(200);
    conn = await connect('plinth', 'plinth-secret-0123456789');
  });
  afterAll(async () => {
    await t?.close();
    await idp?.close();
  });

  it('authorization code + PKCE: signs in, provisions the user with the group-mapped role; the secret is never shown', async () => {
    expect(conn.oidc).toMatchObject({ hasClientSecret: true, redirectUri: REDIRECT });
    expect(JSON.stringify(conn)).not.toContain('plinth-secret');
    idp.setUser({ sub: 'alice', email: `alice@${DOMAIN}`, name: 'Alice', groups: ['plinth-admins'] });
    const start = await t.app.inject({ url: `/v1/sso/${owner.orgId}/${conn.id}/start` });
    const auth = new URL(start.headers.location as string);
    expect(auth.searchParams.get('code_challenge_method')).toBe('S256');
    expect(auth.searchParams.get('code_challenge')).toBeTruthy();
    expect(auth.searchParams.get('nonce')).toBeTruthy();
    const back = await idp.authorize(auth.href, REDIRECT);
    const res = await callback(back);
    expect(res.statusCode, res.body).toBe(200);
    const body = res.json();
    expect(body).toMatchObject({ orgId: owner.orgId, role: 'admin', provisioned: true, user: { email: `alice@${DOMAIN}`, name: 'Alice' } });
    expect((await t.app.inject({ url: '/v1/me', headers: bearer(body.token) })).statusCode).toBe(200);

    // replay: the same callback (code + state) again
    const replay = await callback(back);
    expect(replay.statusCode).toBe(401);
    expect(replay.json().code).toBe('SSO.LOGIN_REFUSED');
  });

  it('tampered or foreign state is refused', async () => {
    idp.setUser({ sub: 'bob', email: `bob@${DOMAIN}` });
    const back = await roundTrip();
    const tampered = new URL(back);
    const state = back.searchParams.get('state')!;
    tampered.searchParams.set('state', `${state.slice(0, -3)}AAA`);
    expect((await callback(tampered)).statusCode).toBe(401);
    const none = new URL(back);
    none.searchParams.delete('state');
    expect((await callback(none)).statusCode).toBe(400);
    // The code of one login with the state of another login: PKCE/nonce/state bind them together.
    const second = await roundTrip();
    const mixed = new URL(second);
    mixed.searchParams.set('code', back.searchParams.get('code')!);
    expect((await callback(mixed)).statusCode).toBe(401);
    // The untouched one (its state unused so far) still works.
    expect((await callback(back)).statusCode).toBe(200);
  });

  it('wrong audience: a code issued to another client is refused', async () => {
    // A connection whose client id is another app at the same IdP: the code the IdP gives to "plinth"
    // cannot be redeemed as "other-app", and vice versa.
    const otherConn = await connect('other-app', 'other-secret-0123456789');
    idp.setUser({ sub: 'carol', email: `carol@${DOMAIN}` });
    const forOther = await roundTrip(otherConn.id);
    const forPlinth = await roundTrip(conn.id);
    const swapped = new URL(forPlinth);
    swapped.searchParams.set('code', forOther.searchParams.get('code')!);
    expect((await callback(swapped)).statusCode).toBe(401);
  });

  it('wrong issuer: a connection whose issuer does not match the discovered metadata never starts', async () => {
    const res = await t.app.inject({
      method: 'POST',
      url: `/v1/orgs/${owner.orgId}/sso/connections`,
      headers: owner.auth,
      payload: { name: 'Mismatch', defaultRole: 'member', oidc: { issuer: `${idp.issuer}/tenant-x`, clientId: 'plinth', clientSecret: 'x' } },
    });
    const start = await t.app.inject({ url: `/v1/sso/${owner.orgId}/${res.json().id}/start` });
    expect(start.statusCode).toBe(401);
  });

  it('an unverified IdP e-mail or one outside the verified domains is refused', async () => {
    idp.setUser({ sub: 'dave', email: `dave@${DOMAIN}`, emailVerified: false });
    expect((await callback(await roundTrip())).statusCode).toBe(401);
    idp.setUser({ sub: 'eve', email: 'eve@elsewhere.test' });
    const res = await callback(await roundTrip());
    expect(res.statusCode).toBe(403);
    expect(res.json().code).toBe('SSO.EMAIL_DOMAIN_NOT_VERIFIED');
  });
});

// A second platform (its clock offset is fixed at composition): run with the services suite only, to keep
// the embedded run short. SAML's clock-skew checks run embedded (sso.saml.test.ts).
describe.skipIf(!process.env.TEST_DATABASE_URL)(`OIDC clock skew (${mode})`, () => {
  it('an ID token outside the allowance (server clock 2 h ahead) is refused', async () => {
    const idp = await startOidcIdp([{ clientId: 'plinth', clientSecret: 'plinth-secret-0123456789', redirectUri: REDIRECT }]);
    const txt = new Map<string, string[][]>();
    const t = await createTestPlatform({ seams: { resolveTxt: async (n) => txt.get(n) ?? [], sso: { clockOffsetSec: 2 * 3600 } } });
    try {
      const owner = await signup(t.app);
      const d = (await t.app.inject({ method: 'POST', url: `/v1/orgs/${owner.orgId}/domains`, headers: owner.auth, payload: { domain: DOMAIN } })).json();
      txt.set(d.txtRecord.name, [[d.txtRecord.value]]);
      await t.app.inject({ method: 'POST', url: `/v1/orgs/${owner.orgId}/domains/${d.id}/verify`, headers: owner.auth });
      const conn = (
        await t.app.inject({ method: 'POST', url: `/v1/orgs/${owner.orgId}/sso/connections`, headers: owner.auth, payload: { name: 'Skewed', defaultRole: 'member', oidc: { issuer: idp.issuer, clientId: 'plinth', clientSecret: 'plinth-secret-0123456789' } } })
      ).json();
      idp.setUser({ sub: 'zed', email: `zed@${DOMAIN}` });
      const start = await t.app.inject({ url: `/v1/sso/${owner.orgId}/${conn.id}/start` });
      const back = await idp.authorize(start.headers.location as string, REDIRECT);
      const res = await t.app.inject({ url: `/v1/sso/oidc/callback${back.search}` });
      expect(res.statusCode).toBe(401);
    } finally {
      await t.close();
      await idp.close();
    }
  });
});
