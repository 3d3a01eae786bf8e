import { generate } from 'otplib';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { bearer, signup, STRONG_PASSWORD, type SignedUp } from '../../../test/helpers/auth.ts';
import { createTestPlatform, type TestPlatform } from '../../../test/helpers/test-platform.ts';
import { uuidv7Time } from './sso.policy.ts';

const mode = `${process.env.TEST_DATABASE_URL ? 'postgres' : 'pglite'}${process.env.TEST_REDIS_URL ? '+redis' : ''}`;
const NO_POLICY = { mfaRequired: false, sessionMaxAgeSec: null, idleTimeoutSec: null, ipAllowList: [] as string[] };

describe(`org security policy: IP allow-list, MFA required, session lifetime, idle timeout, step-up (${mode})`, () => {
  let t: TestPlatform;
  let owner: SignedUp;
  let member: SignedUp;
  let ownerSecret: string;

  const put = (body: object, who = owner, remoteAddress?: string) =>
    t.app.inject({ method: 'PUT', url: `/v1/orgs/${owner.orgId}/security-policy`, headers: who.auth, payload: { ...NO_POLICY, ...body }, ...(remoteAddress ? { remoteAddress } : {}) });
  const org = (token: string, remoteAddress?: string) => t.app.inject({ url: `/v1/orgs/${owner.orgId}`, headers: bearer(token), ...(remoteAddress ? { remoteAddress } : {}) });
  const enroll = async (who: SignedUp) => {
    const { secret } = (await t.app.inject({ method: 'POST', url: '/v1/me/mfa/totp', headers: who.auth })).json();
    const res = await t.app.inject({ method: 'POST', url: '/v1/me/mfa/totp/confirm', headers: who.auth, payload: { code: await generate({ secret }) } });
    expect(res.statusCode, res.body).toBe(200);
    return secret as string;
  };

  beforeAll(async () => {
    t = await createTestPlatform();
    [owner, member] = await Promise.all([signup(t.app, { organizationName: 'Policy Org' }), signup(t.app)]);
    const inv = await t.app.inject({ method: 'POST', url: `/v1/orgs/${owner.orgId}/invitations`, headers: owner.auth, payload: { email: member.email, role: 'member' } });
    await t.app.inject({ method: 'POST', url: `/v1/invitations/${inv.json().token}/accept`, headers: member.auth });
  });
  afterEach(async () => {
    vi.useRealTimers();
  });
  afterAll(async () => t?.close());

  it('IP allow-list: sessions and API keys from outside are refused; a list that would shut out its author is refused', async () => {
    const lockout = await put({ ipAllowList: ['10.0.0.0/8'] });
    expect(lockout.statusCode).toBe(409);
    expect(lockout.json().code).toBe('SSO.POLICY_LOCKS_YOU_OUT');
    expect((await put({ ipAllowList: ['10.0.0.0/33'] })).statusCode).toBe(422);
    const key = (await t.app.inject({ method: 'POST', url: `/v1/orgs/${owner.orgId}/api-keys`, headers: owner.auth, payload: { name: 'ci', scopes: ['org:read'] } })).json().secret;
    const ok = await put({ ipAllowList: ['127.0.0.1', '10.0.0.0/8', '2001:db8::/32'] });
    expect(ok.statusCode, ok.body).toBe(200);
    expect(ok.json().ipAllowList).toEqual(['127.0.0.1', '10.0.0.0/8', '2001:db8::/32']);
    const outside = await org(member.token, '203.0.113.7');
    expect(outside.statusCode).toBe(403);
    expect(outside.json().code).toBe('AUTH.IP_NOT_ALLOWED');
    expect((await org(key, '203.0.113.7')).statusCode).toBe(403);
    expect((await org(key, '10.20.30.40')).statusCode).toBe(200);
    expect((await org(member.token, '2001:db8::1')).statusCode).toBe(200);
    expect((await org(member.token)).statusCode).toBe(200);
    // Not the org's resources: the account itself stays reachable.
    expect((await t.app.inject({ url: '/v1/me', headers: member.auth, remoteAddress: '203.0.113.7' })).statusCode).toBe(200);
    expect((await put({})).statusCode).toBe(200);
    expect((await org(member.token, '203.0.113.7')).statusCode).toBe(200);
  });

  it('MFA required: refused until the member enrolls; the owner must have MFA to require it', async () => {
    const refused = await put({ mfaRequired: true });
    expect(refused.statusCode).toBe(409);
    ownerSecret = await enroll(owner);
    expect((await put({ mfaRequired: true })).statusCode).toBe(200);
    const res = await org(member.token);
    expect(res.statusCode).toBe(403);
    expect(res.json().code).toBe('AUTH.MFA_REQUIRED');
    expect((await t.app.inject({ url: '/v1/me', headers: member.auth })).statusCode).toBe(200);
    await enroll(member);
    expect((await org(member.token)).statusCode).toBe(200);
    expect((await org(owner.token)).statusCode).toBe(200);
  });

  it('step-up: policy/SSO changes, API key creation and role changes want a second-factor check within 15 minutes', async () => {
    vi.useFakeTimers({ toFake: ['Date'] });
    vi.setSystemTime(Date.now() + 20 * 60_000);
    const stale = await put({ mfaRequired: true, sessionMaxAgeSec: 3600 });
    expect(stale.statusCode).toBe(403);
    expect(stale.json().code).toBe('AUTH.STEP_UP_REQUIRED');
    const domain = await t.app.inject({ method: 'POST', url: `/v1/orgs/${owner.orgId}/domains`, headers: owner.auth, payload: { domain: 'stepup.test' } });
    expect(domain.statusCode).toBe(403);
    const key = await t.app.inject({ method: 'POST', url: `/v1/orgs/${owner.orgId}/api-keys`, headers: owner.auth, payload: { name: 'k', scopes: ['org:read'] } });
    expect(key.statusCode).toBe(403);
    expect(key.json().code).toBe('AUTH.STEP_UP_REQUIRED');
    const role = await t.app.inject({ method: 'PATCH', url: `/v1/orgs/${owner.orgId}/members/${member.userId}`, headers: owner.auth, payload: { role: 'viewer' } });
    expect(role.json().code).toBe('AUTH.STEP_UP_REQUIRED');
    const up = await t.app.inject({ method: 'POST', url: '/v1/me/mfa/step-up', headers: owner.auth, payload: { code: await generate({ secret: ownerSecret }) } });
    expect(up.statusCode, up.body).toBe(204);
    expect((await put({ mfaRequired: true })).statusCode).toBe(200);
    const after = await t.app.inject({ method: 'POST', url: `/v1/orgs/${owner.orgId}/api-keys`, headers: owner.auth, payload: { name: 'k', scopes: ['org:read'] } });
    expect(after.statusCode, after.body).toBe(201);
    // reads need no step-up
    expect((await t.app.inject({ url: `/v1/orgs/${owner.orgId}/security-policy`, headers: owner.auth })).statusCode).toBe(200);
  });

  it('session max lifetime: a session older than the policy allows must sign in again (age from its UUIDv7 id)', async () => {
    expect((await put({ mfaRequired: true, sessionMaxAgeSec: 3600 })).statusCode).toBe(200);
    const sessions = (await t.app.inject({ url: '/v1/me/sessions', headers: member.auth })).json().data;
    const current = sessions.find((s: { current: boolean }) => s.current);
    expect(Math.abs(uuidv7Time(current.id) - new Date(current.createdAt).getTime())).toBeLessThan(1000);
    expect((await org(member.token)).statusCode).toBe(200);
    vi.useFakeTimers({ toFake: ['Date'] });
    vi.setSystemTime(Date.now() + 2 * 3600_000);
    const old = await org(member.token);
    expect(old.statusCode).toBe(401);
    expect(old.json().code).toBe('AUTH.REAUTHENTICATION_REQUIRED');
    // a new sign-in (password + TOTP for this member) works
    const first = await t.app.inject({ method: 'POST', url: '/v1/auth/login', payload: { email: owner.email, password: STRONG_PASSWORD } });
    const second = await t.app.inject({ method: 'POST', url: '/v1/auth/login/mfa', payload: { mfaToken: first.json().mfaToken, code: await generate({ secret: ownerSecret }) } });
    expect(second.statusCode, second.body).toBe(200);
    expect((await org(second.json().token)).statusCode).toBe(200);
    owner = { ...owner, token: second.json().token, auth: bearer(second.json().token) };
  });

  it('idle timeout: a session unused in the org for longer must sign in again; activity keeps it alive', async () => {
    expect((await put({ mfaRequired: false, idleTimeoutSec: 120 })).statusCode).toBe(200);
    const token = member.token;
    vi.useFakeTimers({ toFake: ['Date'] });
    const start = Date.now();
    expect((await org(token)).statusCode).toBe(200);
    vi.setSystemTime(start + 90_000);
    expect((await org(token)).statusCode).toBe(200); // within 120 s of the last request
    vi.setSystemTime(start + 180_000);
    expect((await org(token)).statusCode).toBe(200); // 90 s since the last one
    vi.setSystemTime(start + 400_000);
    const idle = await org(token);
    expect(idle.statusCode).toBe(401);
    expect(idle.json().code).toBe('AUTH.REAUTHENTICATION_REQUIRED');
    expect((await org(token)).statusCode).toBe(401); // and stays expired
    const audit = (await t.app.inject({ url: `/v1/orgs/${owner.orgId}/audit-events?action=sso.security_policy_changed`, headers: owner.auth })).json().data;
    expect(audit[0].changes).toMatchObject({ idleTimeoutSec: { from: null, to: 120 } });
  });

  it('policy routes: owner only (an admin gets 403); another org gets 404', async () => {
    const other = await signup(t.app);
    expect((await t.app.inject({ url: `/v1/orgs/${owner.orgId}/security-policy`, headers: other.auth })).statusCode).toBe(404);
    const inv = await t.app.inject({ method: 'POST', url: `/v1/orgs/${owner.orgId}/invitations`, headers: owner.auth, payload: { email: other.email, role: 'admin' } });
    await t.app.inject({ method: 'POST', url: `/v1/invitations/${inv.json().token}/accept`, headers: other.auth });
    await t.app.inject({ method: 'PUT', url: `/v1/orgs/${owner.orgId}/security-policy`, headers: owner.auth, payload: NO_POLICY });
    const admin = await t.app.inject({ url: `/v1/orgs/${owner.orgId}/security-policy`, headers: other.auth });
    expect(admin.statusCode, admin.body).toBe(403);
  });
});
