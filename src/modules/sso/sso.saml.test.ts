import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { assertionXml, createSamlIdp, otherKey, readAuthnRequest, signAssertion, wrapResponse, type SamlIdp } from '../../../test/helpers/saml-idp.ts';
import { bearer, signup, STRONG_PASSWORD, type SignedUp } from '../../../test/helpers/auth.ts';
import { createTestPlatform, type TestPlatform } from '../../../test/helpers/test-platform.ts';

const mode = `${process.env.TEST_DATABASE_URL ? 'postgres' : 'pglite'}${process.env.TEST_REDIS_URL ? '+redis' : ''}`;

/** DNS for the test: TXT records the test "publishes". */
const txt = new Map<string, string[][]>();

describe(`SAML SSO, verified domains and enforcement (${mode})`, () => {
  let t: TestPlatform;
  let owner: SignedUp;
  let other: SignedUp;
  let idp: SamlIdp;
  let conn: { id: string; saml: { spEntityId: string; acsUrl: string } };
  const DOMAIN = 'acme-saml.test';

  const acs = (c = conn, orgId = owner.orgId) => `/v1/sso/saml/${orgId}/${c.id}/acs`;
  const post = (url: string, form: Record<string, string>) =>
    t.app.inject({ method: 'POST', url, headers: { 'content-type': 'application/x-www-form-urlencoded' }, payload: new URLSearchParams(form).toString() });
  const assertion = (over: Partial<Parameters<SamlIdp['response']>[0]> = {}) =>
    idp.response({ email: `ada@${DOMAIN}`, audience: conn.saml.spEntityId, acsUrl: conn.saml.acsUrl, ...over });

  async function addVerifiedDomain(who: SignedUp, domain: string) {
    const added = await t.app.inject({ method: 'POST', url: `/v1/orgs/${who.orgId}/domains`, headers: who.auth, payload: { domain } });
    expect(added.statusCode, added.body).toBe(201);
    const d = added.json();
    txt.set(d.txtRecord.name, [['unrelated'], [d.txtRecord.value.slice(0, 10), d.txtRecord.value.slice(10)]]);
    const verified = await t.app.inject({ method: 'POST', url: `/v1/orgs/${who.orgId}/domains/${d.id}/verify`, headers: who.auth });
    expect(verified.statusCode, verified.body).toBe(200);
    return verified.json();
  }

  beforeAll(async () => {
    t = await createTestPlatform({ seams: { resolveTxt: async (name) => txt.get(name) ?? [] } });
    [owner, other, idp] = await Promise.all([signup(t.app, { organizationName: 'Acme' }), signup(t.app, { organizationName: 'Other' }), createSamlIdp()]);
    await addVerifiedDomain(owner, DOMAIN);
    const res = await t.app.inject({
      method: 'POST',
      url: `/v1/orgs/${owner.orgId}/sso/connections`,
      headers: owner.auth,
      payload: {
        name: 'Okta',
        defaultRole: 'viewer',
        roleMapping: { 'eng-admins': 'admin', engineers: 'member' },
        saml: { idpEntityId: idp.entityId, idpSsoUrl: idp.ssoUrl, idpCert: idp.cert, allowIdpInitiated: true },
      },
    });
    expect(res.statusCode, res.body).toBe(201);
    conn = res.json();
  });
  afterAll(async () => t?.close());

  it('connection admin: owner only, validated input, audited; SP metadata names the ACS', async () => {
    expect(conn.saml.acsUrl).toMatch(new RegExp(`/v1/sso/saml/${owner.orgId}/${conn.id}/acs$`));
    const bad = await t.app.inject({ method: 'POST', url: `/v1/orgs/${owner.orgId}/sso/connections`, headers: owner.auth, payload: { name: 'x', defaultRole: 'owner', saml: { idpEntityId: 'x', idpSsoUrl: 'https://x.test', idpCert: idp.cert } } });
    expect(bad.statusCode).toBe(400); // an IdP never mints owners
    const both = await t.app.inject({ method: 'POST', url: `/v1/orgs/${owner.orgId}/sso/connections`, headers: owner.auth, payload: { name: 'x', defaultRole: 'member' } });
    expect(both.statusCode).toBe(422);
    expect(both.headers['content-type']).toContain('application/problem+json');
    const meta = await t.app.inject({ url: `/v1/sso/saml/${owner.orgId}/${conn.id}/metadata` });
    expect(meta.statusCode).toBe(200);
    expect(meta.body).toContain(conn.saml.acsUrl);
    const audit = await t.app.inject({ url: `/v1/orgs/${owner.orgId}/audit-events?action=sso.connection_created`, headers: owner.auth });
    expect(audit.json().data).toHaveLength(1);
  });

  it('IdP-initiated: a signed assertion signs in, provisions the user just in time with the mapped role, once', async () => {
    const SAMLResponse = assertion({ email: `Grace@${DOMAIN}`, name: 'Grace Hopper', groups: ['engineers', 'eng-admins'] });
    const res = await t.app.inject({
      method: 'POST',
      url: acs(),
      headers: { 'content-type': 'application/x-www-form-urlencoded', 'idempotency-key': 'k-1' },
      payload: new URLSearchParams({ SAMLResponse }).toString(),
    });
    expect(res.statusCode, res.body).toBe(200);
    const body = res.json();
    expect(body).toMatchObject({ orgId: owner.orgId, role: 'admin', provisioned: true, user: { email: `grace@${DOMAIN}`, name: 'Grace Hopper' } });
    const me = await t.app.inject({ url: `/v1/orgs/${owner.orgId}/members/${body.user.id}`, headers: bearer(body.token) });
    expect(me.statusCode).toBe(200);
    expect(me.json().role).toBe('admin');
    // replay: the very same response again (an Idempotency-Key does not make it a stored replay either)
    const replay = await t.app.inject({
      method: 'POST',
      url: acs(),
      headers: { 'content-type': 'application/x-www-form-urlencoded', 'idempotency-key': 'k-1' },
      payload: new URLSearchParams({ SAMLResponse }).toString(),
    });
    expect(replay.statusCode).toBe(401);
    expect(replay.json().code).toBe('SSO.LOGIN_REFUSED');
    // The SSO-only account has no password.
    const pw = await t.app.inject({ method: 'POST', url: '/v1/auth/login', payload: { email: `grace@${DOMAIN}`, password: STRONG_PASSWORD } });
    expect(pw.statusCode).toBe(401);
    const audit = await t.app.inject({ url: `/v1/orgs/${owner.orgId}/audit-events?action=sso.login`, headers: owner.auth });
    expect(audit.json().data[0]).toMatchObject({ target: { id: body.user.id }, changes: { connectionId: conn.id, userProvisioned: true } });
  });

  it('without a mapped group the default role applies; a later mapped login moves the member', async () => {
    const first = await post(acs(), { SAMLResponse: assertion({ email: `lin@${DOMAIN}` }) });
    expect(first.json()).toMatchObject({ role: 'viewer', provisioned: true });
    const second = await post(acs(), { SAMLResponse: assertion({ email: `lin@${DOMAIN}`, groups: ['engineers'] }) });
    expect(second.json()).toMatchObject({ role: 'member', provisioned: false });
    const third = await post(acs(), { SAMLResponse: assertion({ email: `lin@${DOMAIN}`, groups: ['unmapped'] }) });
    expect(third.json().role).toBe('member'); // unmapped groups do not demote
  });

  it('SP-initiated: the response must answer the request this server issued, with its RelayState, once', async () => {
    const start = await t.app.inject({ url: `/v1/sso/${owner.orgId}/${conn.id}/start` });
    expect(start.statusCode).toBe(302);
    expect(start.headers.location).toMatch(/^https:\/\/idp\.example\.test\/sso\?SAMLRequest=/);
    const req = readAuthnRequest(start.headers.location as string);
    const asJson = await t.app.inject({ url: `/v1/sso/${owner.orgId}/${conn.id}/start?mode=json` });
    expect(asJson.json().redirectUrl).toMatch(/^https:\/\/idp\.example\.test\/sso\?SAMLRequest=/);
    expect(req.xml).toContain(conn.saml.acsUrl);
    const SAMLResponse = assertion({ email: `sp@${DOMAIN}`, inResponseTo: req.id });
    // tampered RelayState
    expect((await post(acs(), { SAMLResponse, RelayState: `${req.relayState.slice(0, -2)}xx` })).statusCode).toBe(401);
    // no RelayState at all
    expect((await post(acs(), { SAMLResponse })).statusCode).toBe(401);
    // another request's RelayState (a different AuthnRequest)
    const other = readAuthnRequest((await t.app.inject({ url: `/v1/sso/${owner.orgId}/${conn.id}/start` })).headers.location as string);
    expect((await post(acs(), { SAMLResponse, RelayState: other.relayState })).statusCode).toBe(401);
    const ok = await post(acs(), { SAMLResponse, RelayState: req.relayState });
    expect(ok.statusCode, ok.body).toBe(200);
    // the same state (with a fresh assertion) cannot be used twice
    const again = await post(acs(), { SAMLResponse: assertion({ email: `sp@${DOMAIN}`, inResponseTo: req.id }), RelayState: req.relayState });
    expect(again.statusCode).toBe(401);
  });

  it('refuses: wrong audience, wrong issuer, unsigned, signed by another key, e-mail outside the verified domains', async () => {
    const cases: Record<string, string> = {
      audience: assertion({ audience: 'https://another-sp.test/metadata' }),
      issuer: assertion({ issuer: 'https://evil-idp.test' }),
      unsigned: assertion({ signingKey: null }),
      otherKey: assertion({ signingKey: otherKey() }),
    };
    for (const [name, SAMLResponse] of Object.entries(cases)) {
      const res = await post(acs(), { SAMLResponse });
      expect(res.statusCode, `${name}: ${res.body}`).toBe(401);
      expect(res.json().code).toBe('SSO.LOGIN_REFUSED');
    }
    const foreign = await post(acs(), { SAMLResponse: assertion({ email: 'victim@gmail.com' }) });
    expect(foreign.statusCode).toBe(403);
    expect(foreign.json().code).toBe('SSO.EMAIL_DOMAIN_NOT_VERIFIED');
    expect(await t.modules.identity.findUserByEmail('victim@gmail.com')).toBeNull();
  });

  it('clock skew: accepted within the allowance (60 s), refused beyond it on either side', async () => {
    expect((await post(acs(), { SAMLResponse: assertion({ email: `skew1@${DOMAIN}`, notBefore: 30 }) })).statusCode).toBe(200);
    expect((await post(acs(), { SAMLResponse: assertion({ email: `skew2@${DOMAIN}`, notBefore: 300 }) })).statusCode).toBe(401);
    expect((await post(acs(), { SAMLResponse: assertion({ email: `skew3@${DOMAIN}`, notOnOrAfter: -300 }) })).statusCode).toBe(401);
  });

  it('signature wrapping (XSW): an unsigned evil assertion beside or around the signed one is refused', async () => {
    const signed = signAssertion(assertionXml({ issuer: idp.entityId, email: `honest@${DOMAIN}`, audience: conn.saml.spEntityId, acsUrl: conn.saml.acsUrl }), idp.privateKey);
    const evil = assertionXml({ issuer: idp.entityId, email: `mallory@${DOMAIN}`, audience: conn.saml.spEntityId, acsUrl: conn.saml.acsUrl, groups: ['eng-admins'] });
    const b64 = (xml: string) => Buffer.from(xml).toString('base64');
    const opts = { issuer: idp.entityId, acsUrl: conn.saml.acsUrl };
    // XSW1-like: the evil assertion is the Response's, the signed one hidden in an Extensions element
    const hidden = wrapResponse(evil, opts).replace('<samlp:Status>', `<samlp:Extensions>${signed}</samlp:Extensions><samlp:Status>`);
    // XSW2-like: the signed assertion nested inside the evil one
    const nested = wrapResponse(evil.replace('</saml:Issuer>', `</saml:Issuer>${signed}`), opts);
    // two assertions side by side
    const twin = wrapResponse(evil + signed, opts);
    // the signed assertion's id reused by the evil one
    const id = /ID="([^"]+)"/.exec(signed)![1]!;
    const sameId = wrapResponse(evil.replace(/ID="[^"]+"/, `ID="${id}"`) + signed, opts);
    for (const [name, xml] of Object.entries({ hidden, nested, twin, sameId })) {
      const res = await post(acs(), { SAMLResponse: b64(xml) });
      expect(res.statusCode, `${name}: ${res.body}`).toBe(401);
    }
    expect(await t.modules.identity.findUserByEmail(`mallory@${DOMAIN}`)).toBeNull();
  });

  it("another org's ids: a connection is reachable only under its own org", async () => {
    const SAMLResponse = assertion({ email: `cross@${DOMAIN}` });
    expect((await post(acs(conn, other.orgId), { SAMLResponse })).statusCode).toBe(401);
    expect((await t.app.inject({ url: `/v1/sso/${other.orgId}/${conn.id}/start` })).statusCode).toBe(404);
    expect((await t.app.inject({ url: `/v1/sso/saml/${other.orgId}/${conn.id}/metadata` })).statusCode).toBe(404);
    expect((await t.app.inject({ url: `/v1/orgs/${owner.orgId}/sso/connections`, headers: other.auth })).statusCode).toBe(404);
  });

  it('IdP-initiated logins are refused unless the connection allows them; a disabled connection refuses all', async () => {
    const res = await t.app.inject({
      method: 'POST',
      url: `/v1/orgs/${owner.orgId}/sso/connections`,
      headers: owner.auth,
      payload: { name: 'Strict', defaultRole: 'member', saml: { idpEntityId: idp.entityId, idpSsoUrl: idp.ssoUrl, idpCert: idp.cert } },
    });
    const strict = res.json();
    const strictAssertion = idp.response({ email: `strict@${DOMAIN}`, audience: strict.saml.spEntityId, acsUrl: strict.saml.acsUrl });
    expect((await post(acs(strict), { SAMLResponse: strictAssertion })).statusCode).toBe(401);
    const off = await t.app.inject({ method: 'PATCH', url: `/v1/orgs/${owner.orgId}/sso/connections/${conn.id}`, headers: owner.auth, payload: { enabled: false } });
    expect(off.json().enabled).toBe(false);
    expect((await post(acs(), { SAMLResponse: assertion({ email: `off@${DOMAIN}` }) })).statusCode).toBe(401);
    await t.app.inject({ method: 'PATCH', url: `/v1/orgs/${owner.orgId}/sso/connections/${conn.id}`, headers: owner.auth, payload: { enabled: true } });
  });

  describe('verified domains and SSO enforcement', () => {
    it('verification needs the TXT record; a domain is verified by one org only', async () => {
      const bad = await t.app.inject({ method: 'POST', url: `/v1/orgs/${other.orgId}/domains`, headers: other.auth, payload: { domain: 'not a domain' } });
      expect(bad.statusCode).toBe(422);
      expect(bad.json().code).toBe('SSO.INVALID_DOMAIN');
      const add = await t.app.inject({ method: 'POST', url: `/v1/orgs/${other.orgId}/domains`, headers: other.auth, payload: { domain: 'unproven.test' } });
      expect(add.statusCode).toBe(201);
      const d = add.json();
      expect(d).toMatchObject({ status: 'pending', txtRecord: { name: '_plinth-verification.unproven.test' } });
      const fail = await t.app.inject({ method: 'POST', url: `/v1/orgs/${other.orgId}/domains/${d.id}/verify`, headers: other.auth });
      expect(fail.statusCode).toBe(422);
      expect(fail.json().code).toBe('SSO.DOMAIN_VERIFICATION_FAILED');
      // Other org claims Acme's verified domain: it may add it, never verify it.
      const claim = await t.app.inject({ method: 'POST', url: `/v1/orgs/${other.orgId}/domains`, headers: other.auth, payload: { domain: DOMAIN } });
      expect(claim.statusCode).toBe(201);
      txt.set(claim.json().txtRecord.name, [[claim.json().txtRecord.value]]);
      const steal = await t.app.inject({ method: 'POST', url: `/v1/orgs/${other.orgId}/domains/${claim.json().id}/verify`, headers: other.auth });
      expect(steal.statusCode).toBe(409);
      const notVerified = await t.app.inject({ method: 'POST', url: `/v1/orgs/${other.orgId}/domains/${d.id}/enforcement`, headers: other.auth, payload: { enforced: true } });
      expect(notVerified.statusCode).toBe(409);
    });

    it('enforced: password login, password signup and password change are refused for the domain; SSO still works', async () => {
      // A password account made before enforcement.
      const legacy = await signup(t.app, { email: `legacy@${DOMAIN}` });
      const domains = (await t.app.inject({ url: `/v1/orgs/${owner.orgId}/domains`, headers: owner.auth })).json().data;
      const d = domains.find((x: { domain: string }) => x.domain === DOMAIN);
      const on = await t.app.inject({ method: 'POST', url: `/v1/orgs/${owner.orgId}/domains/${d.id}/enforcement`, headers: owner.auth, payload: { enforced: true } });
      expect(on.statusCode, on.body).toBe(200);
      expect(on.json().ssoEnforced).toBe(true);

      const login = await t.app.inject({ method: 'POST', url: '/v1/auth/login', payload: { email: `Legacy@${DOMAIN}`, password: STRONG_PASSWORD } });
      expect(login.statusCode).toBe(403);
      expect(login.json()).toMatchObject({ code: 'AUTH.SSO_REQUIRED', orgId: owner.orgId });
      const join = await t.app.inject({ method: 'POST', url: '/v1/auth/signup', payload: { email: `new@${DOMAIN}`, password: STRONG_PASSWORD, name: 'N', organizationName: 'Shadow' } });
      expect(join.statusCode).toBe(403);
      const change = await t.app.inject({ method: 'POST', url: '/v1/me/password', headers: legacy.auth, payload: { currentPassword: STRONG_PASSWORD, newPassword: `${STRONG_PASSWORD} changed` } });
      expect(change.statusCode).toBe(403);
      // Other domains are unaffected.
      expect((await t.app.inject({ method: 'POST', url: '/v1/auth/login', payload: { email: owner.email, password: STRONG_PASSWORD } })).statusCode).toBe(200);
      // SSO for the same person works.
      expect((await post(acs(), { SAMLResponse: assertion({ email: `legacy@${DOMAIN}` }) })).statusCode).toBe(200);

      const off = await t.app.inject({ method: 'POST', url: `/v1/orgs/${owner.orgId}/domains/${d.id}/enforcement`, headers: owner.auth, payload: { enforced: false } });
      expect(off.json().ssoEnforced).toBe(false);
      expect((await t.app.inject({ method: 'POST', url: '/v1/auth/login', payload: { email: `legacy@${DOMAIN}`, password: STRONG_PASSWORD } })).statusCode).toBe(200);
      const audit = (await t.app.inject({ url: `/v1/orgs/${owner.orgId}/audit-events?targetId=${d.id}`, headers: owner.auth })).json().data.map((e: { action: string }) => e.action);
      expect(audit).toEqual(['sso.enforcement_disabled', 'sso.enforcement_enabled', 'sso.domain_verified', 'sso.domain_added']);
    });

    it('only the owner manages SSO (admins get 403)', async () => {
      const admin = await signup(t.app);
      const inv = await t.app.inject({ method: 'POST', url: `/v1/orgs/${owner.orgId}/invitations`, headers: owner.auth, payload: { email: admin.email, role: 'admin' } });
      await t.app.inject({ method: 'POST', url: `/v1/invitations/${inv.json().token}/accept`, headers: admin.auth });
      const res = await t.app.inject({ url: `/v1/orgs/${owner.orgId}/domains`, headers: admin.auth });
      expect(res.statusCode).toBe(403);
    });
  });
});
