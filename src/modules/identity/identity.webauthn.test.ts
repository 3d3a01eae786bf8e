import { generate } from 'otplib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { bearer, signup, STRONG_PASSWORD, type SignedUp } from '../../../test/helpers/auth.ts';
import { createTestPlatform, type TestPlatform } from '../../../test/helpers/test-platform.ts';
import { createSoftAuthenticator, FLAGS } from '../../../test/helpers/webauthn.ts';

const mode = `${process.env.TEST_DATABASE_URL ? 'postgres' : 'pglite'}${process.env.TEST_REDIS_URL ? '+redis' : ''}`;
const RP_ID = 'example.test';
const ORIGIN = 'https://app.example.test';
const EVIL = 'https://app.evil.test';

/**
 * Passkeys against the real protocol library: every response comes from a software authenticator
 * (test/helpers/webauthn.ts: node:crypto P-256 keys, hand-built CBOR and authenticator data) and is
 * verified by @simplewebauthn/server in the app, attacks included.
 */
describe(`WebAuthn / passkeys (${mode})`, () => {
  let t: TestPlatform;
  let a: SignedUp;
  let b: SignedUp;
  const keyA = createSoftAuthenticator();
  const keyB = createSoftAuthenticator();
  let credA: { id: string; credentialId: string };
  let credA2: { id: string; credentialId: string };
  let credB: { id: string; credentialId: string };

  const post = (url: string, payload: object | undefined, headers: Record<string, string> = {}) =>
    t.app.inject({ method: 'POST', url, headers, ...(payload ? { payload } : {}) });
  const regOptions = async (who: SignedUp) => {
    const res = await post('/v1/me/mfa/webauthn/registration-options', undefined, who.auth);
    expect(res.statusCode, res.body).toBe(200);
    return res.json();
  };
  const register = (who: SignedUp, response: object, name?: string) => post('/v1/me/mfa/webauthn/credentials', { response, ...(name ? { name } : {}) }, who.auth);
  const problem = (res: { statusCode: number; headers: Record<string, unknown>; json: () => any }, status: number, code: string) => {
    expect(res.headers['content-type']).toContain('application/problem+json');
    expect({ status: res.statusCode, code: res.json().code }).toEqual({ status, code });
  };
  // In the order they happened: seq is given by the audit sequencer a moment later (null until then).
  const auditActions = async (userId: string) =>
    (await t.db.owner.selectFrom('audit_events').select('action').where('target_id', '=', userId).where('action', 'like', 'mfa.webauthn%').orderBy('occurred_at').orderBy('id').execute()).map((r) => r.action);
  const login = async (who: SignedUp) => (await post('/v1/auth/login', { email: who.email, password: STRONG_PASSWORD })).json();
  const loginOptions = async (mfaToken: string) => {
    const res = await post('/v1/auth/login/mfa/webauthn-options', { mfaToken });
    expect(res.statusCode, res.body).toBe(200);
    return res.json();
  };

  beforeAll(async () => {
    t = await createTestPlatform({
      env: { WEBAUTHN_RP_ID: RP_ID, WEBAUTHN_ORIGINS: ORIGIN, WEBAUTHN_RP_NAME: 'Plinth test', LOGIN_DELAY_AFTER_FAILURES: '1000', LOGIN_MAX_FAILURES_PER_ACCOUNT_IP_PER_HOUR: '100' },
    });
    [a, b] = await Promise.all([signup(t.app), signup(t.app)]);
  });
  afterAll(async () => t?.close());

  it('registration: real attestations (none, packed) register passkeys; the first one enables MFA, returns recovery codes, ends other sessions', async () => {
    const otherDevice = await login(a);
    expect(otherDevice.token).toMatch(/^pls_/);
    const opts = await regOptions(a);
    expect(opts.rp).toEqual({ id: RP_ID, name: 'Plinth test' });
    expect(opts.user.name).toBe(a.email);
    expect(Buffer.from(opts.user.id, 'base64url').toString('hex')).toBe(a.userId.replaceAll('-', ''));
    expect(opts.challenge.length).toBeGreaterThanOrEqual(43);
    const first = await register(a, keyA.create(opts, { origin: ORIGIN }), 'Laptop');
    expect(first.statusCode, first.body).toBe(201);
    expect(first.headers['cache-control']).toBe('no-store');
    expect(first.json().credential).toMatchObject({ name: 'Laptop', backedUp: false, transports: ['internal', 'hybrid'] });
    expect(first.json().recoveryCodes).toHaveLength(10);
    credA = first.json().credential;
    expect((await t.app.inject({ url: '/v1/me', headers: bearer(otherDevice.token) })).statusCode).toBe(401);
    expect((await t.app.inject({ url: '/v1/me/mfa', headers: a.auth })).json()).toEqual({ enabled: true, totp: false, webauthnCredentials: 1, recoveryCodesRemaining: 10 });

    // a second one (packed self-attestation) right after: this session proved the factor just now
    const opts2 = await regOptions(a);
    expect(opts2.excludeCredentials.map((c: { id: string }) => c.id)).toEqual([credA.credentialId]);
    const second = await register(a, keyA.create(opts2, { origin: ORIGIN, fmt: 'packed', counter: 5 }));
    expect(second.statusCode, second.body).toBe(201);
    expect(second.json().recoveryCodes).toBeUndefined();
    credA2 = second.json().credential;
    expect(credA2).toMatchObject({ name: 'Passkey 2' });
    const list = (await t.app.inject({ url: '/v1/me/mfa/webauthn/credentials', headers: a.auth })).json().data;
    expect(list.map((c: { id: string }) => c.id)).toEqual([credA.id, credA2.id]);
    // the public key is stored as the COSE key, never shown
    expect(JSON.stringify(list)).not.toContain('publicKey');

    // B, without MFA before, registers a non-discoverable security key
    const third = await register(b, keyB.create(await regOptions(b), { origin: ORIGIN, discoverable: false }), 'YubiKey');
    expect(third.statusCode, third.body).toBe(201);
    credB = third.json().credential;
  });

  it('registration attacks: replayed challenge, wrong origin, wrong RP id, another user\'s challenge, bad input → 400 problems, nothing stored', async () => {
    const opts = await regOptions(a);
    const good = keyA.create(opts, { origin: ORIGIN });
    const wrongOrigin = await register(a, keyA.create(opts, { origin: EVIL }));
    problem(wrongOrigin, 400, 'WEBAUTHN.ORIGIN_MISMATCH');
    // the failed attempt used the challenge up: the genuine response made for it is now a replay
    problem(await register(a, good), 400, 'WEBAUTHN.CHALLENGE_INVALID');
    problem(await register(a, keyA.create(await regOptions(a), { origin: ORIGIN, rpId: 'evil.test' })), 400, 'WEBAUTHN.RP_ID_MISMATCH');
    // B's challenge in A's registration
    problem(await register(a, keyA.create(await regOptions(b), { origin: ORIGIN })), 400, 'WEBAUTHN.CHALLENGE_INVALID');
    // the same authenticator response twice (a successful registration replayed)
    const fresh = keyA.create(await regOptions(a), { origin: ORIGIN });
    const ok = await register(a, fresh, 'Phone');
    expect(ok.statusCode, ok.body).toBe(201);
    problem(await register(a, fresh), 400, 'WEBAUTHN.CHALLENGE_INVALID');
    // a forged challenge, malformed client data, schema violations
    problem(await register(a, keyA.create({ ...opts, challenge: 'bm90LWEtY2hhbGxlbmdl' }, { origin: ORIGIN })), 400, 'WEBAUTHN.CHALLENGE_INVALID');
    problem(await register(a, { ...good, response: { ...good.response, clientDataJSON: 'AAAA' } }), 400, 'WEBAUTHN.MALFORMED_RESPONSE');
    problem(await register(a, { ...good, type: 'password' }), 400, 'HTTP.VALIDATION_FAILED');
    problem(await register(a, { ...good, response: { ...good.response, attestationObject: 'x'.repeat(70_000) } }), 400, 'HTTP.VALIDATION_FAILED');
    // API keys cannot manage passkeys
    const apiKey = await post(`/v1/orgs/${a.orgId}/api-keys`, { name: 'k', scopes: ['org:read'] }, a.auth);
    expect(apiKey.statusCode, apiKey.body).toBe(201);
    problem(await post('/v1/me/mfa/webauthn/registration-options', undefined, bearer(apiKey.json().secret)), 403, 'AUTH.SESSION_REQUIRED');
    const phone = ok.json().credential.id;
    expect((await t.app.inject({ method: 'DELETE', url: `/v1/me/mfa/webauthn/credentials/${phone}`, headers: a.auth })).statusCode).toBe(204);
    expect((await t.app.inject({ url: '/v1/me/mfa/webauthn/credentials', headers: a.auth })).json().data).toHaveLength(2);
  });

  it('password sign-in + passkey as the second factor; attacks on the assertion are refused: other user\'s credential, tampered signature, wrong origin/RP id, replay', async () => {
    const { mfaRequired, mfaToken, factors } = await login(a);
    expect({ mfaRequired, factors }).toEqual({ mfaRequired: true, factors: ['webauthn', 'recovery_code'] });
    const assert = (webauthn: object, token = mfaToken) => post('/v1/auth/login/mfa', { mfaToken: token, webauthn });

    const o1 = await loginOptions(mfaToken);
    expect(o1.allowCredentials.map((c: { id: string }) => c.id).sort()).toEqual([credA.credentialId, credA2.credentialId].sort());
    // B's (registered, valid) key signing A's challenge
    problem(await assert(keyB.get(o1, { origin: ORIGIN, credentialId: credB.credentialId })), 401, 'WEBAUTHN.CREDENTIAL_UNKNOWN');
    problem(await assert(keyA.get(await loginOptions(mfaToken), { origin: ORIGIN, credentialId: credA.credentialId, tamperSignature: true })), 401, 'WEBAUTHN.VERIFICATION_FAILED');
    problem(await assert(keyA.get(await loginOptions(mfaToken), { origin: EVIL, credentialId: credA.credentialId })), 401, 'WEBAUTHN.ORIGIN_MISMATCH');
    problem(await assert(keyA.get(await loginOptions(mfaToken), { origin: ORIGIN, credentialId: credA.credentialId, rpId: 'evil.test' })), 401, 'WEBAUTHN.RP_ID_MISMATCH');
    const good = keyA.get(await loginOptions(mfaToken), { origin: ORIGIN, credentialId: credA.credentialId });
    const ok = await assert(good);
    expect(ok.statusCode, ok.body).toBe(200);
    expect(ok.json().user.id).toBe(a.userId);
    expect((await t.app.inject({ url: '/v1/me', headers: bearer(ok.json().token) })).statusCode).toBe(200);

    // replay: the same assertion on the next sign-in (its challenge was bound to the first and is used up)
    const next = (await login(a)).mfaToken;
    problem(await assert(good, next), 401, 'WEBAUTHN.CHALLENGE_INVALID');
    // a challenge of another sign-in is not this one's
    const other = (await login(a)).mfaToken;
    const foreign = keyA.get(await loginOptions(other), { origin: ORIGIN, credentialId: credA.credentialId });
    problem(await assert(foreign, next), 401, 'WEBAUTHN.CHALLENGE_INVALID');
    expect((await assert(foreign, other)).statusCode).toBe(200);
  });

  it('a signature counter that goes backwards (a cloned authenticator) is refused and audited; the stored counter stays', async () => {
    const stepUp = (webauthn: object) => post('/v1/me/mfa/step-up', { webauthn }, a.auth);
    const opts = async () => (await post('/v1/me/mfa/webauthn/step-up-options', undefined, a.auth)).json();
    const stored = async () => Number((await t.db.owner.selectFrom('webauthn_credentials').select('sign_count').where('id', '=', credA2.id).executeTakeFirstOrThrow()).sign_count);
    // credA2 started at 5 (registration): the clone reports 5 again, then 3
    expect(await stored()).toBe(5);
    problem(await stepUp(keyA.get(await opts(), { origin: ORIGIN, credentialId: credA2.credentialId, counter: 5 })), 401, 'WEBAUTHN.COUNTER_REGRESSION');
    problem(await stepUp(keyA.get(await opts(), { origin: ORIGIN, credentialId: credA2.credentialId, counter: 3 })), 401, 'WEBAUTHN.COUNTER_REGRESSION');
    // a forged low counter without a valid signature is a bad signature, not evidence of a clone
    problem(await stepUp(keyA.get(await opts(), { origin: ORIGIN, credentialId: credA2.credentialId, counter: 1, tamperSignature: true })), 401, 'WEBAUTHN.VERIFICATION_FAILED');
    expect(await stored()).toBe(5);
    const ok = await stepUp(keyA.get(await opts(), { origin: ORIGIN, credentialId: credA2.credentialId }));
    expect(ok.statusCode, ok.body).toBe(204);
    expect(await stored()).toBe(6);
    const events = await t.db.owner.selectFrom('audit_events').select(['action', 'changes']).where('target_id', '=', a.userId).where('action', '=', 'mfa.webauthn_counter_regression').orderBy('occurred_at').orderBy('id').execute();
    expect(events.map((e) => (typeof e.changes === 'string' ? JSON.parse(e.changes) : e.changes))).toEqual([
      expect.objectContaining({ credential: credA2.id, storedCounter: 5, presentedCounter: 5, purpose: 'step_up' }),
      expect.objectContaining({ credential: credA2.id, storedCounter: 5, presentedCounter: 3 }),
    ]);
  });

  it('passwordless: a discoverable passkey signs in without a password (user verification required); purpose-bound challenges', async () => {
    const opts = (await post('/v1/auth/passkey/options', undefined)).json();
    expect(opts).toMatchObject({ rpId: RP_ID, userVerification: 'required' });
    expect(opts.allowCredentials ?? []).toEqual([]);
    const signIn = (response: object) => post('/v1/auth/passkey', { response });
    // without user verification (presence only) it is not both factors
    problem(await signIn(keyA.get(opts, { origin: ORIGIN, credentialId: credA.credentialId, flags: FLAGS.UP })), 401, 'WEBAUTHN.VERIFICATION_FAILED');
    // a non-discoverable key returns no user handle
    problem(await signIn(keyB.get((await post('/v1/auth/passkey/options', undefined)).json(), { origin: ORIGIN, credentialId: credB.credentialId, flags: FLAGS.UP | FLAGS.UV })), 401, 'WEBAUTHN.CREDENTIAL_UNKNOWN');
    // a step-up challenge is not a sign-in challenge
    const stepUpOpts = (await post('/v1/me/mfa/webauthn/step-up-options', undefined, a.auth)).json();
    problem(await signIn(keyA.get(stepUpOpts, { origin: ORIGIN, credentialId: credA.credentialId })), 401, 'WEBAUTHN.CHALLENGE_INVALID');
    const res = await signIn(keyA.get((await post('/v1/auth/passkey/options', undefined)).json(), { origin: ORIGIN }));
    expect(res.statusCode, res.body).toBe(200);
    expect(res.headers['cache-control']).toBe('no-store');
    expect(res.json().user.id).toBe(a.userId);
    // that session counts as MFA-proved (no step-up needed for a sensitive action)
    const sessionId = (await t.app.inject({ url: '/v1/me/sessions', headers: bearer(res.json().token) })).json().data.find((s: { current: boolean }) => s.current).id;
    await expect(t.modules.identity.assertRecentMfa({ kind: 'user', userId: a.userId, sessionId, isPlatformAdmin: false }, 60)).resolves.toBeUndefined();
    // a disabled account cannot sign in with its passkey
    await t.modules.identity.setDisabled(a.userId, true, { actor: { type: 'system', id: 'test', userId: null }, requestId: null, ip: null });
    problem(await signIn(keyA.get((await post('/v1/auth/passkey/options', undefined)).json(), { origin: ORIGIN })), 401, 'AUTH.INVALID_CREDENTIALS');
    await t.modules.identity.setDisabled(a.userId, false, { actor: { type: 'system', id: 'test', userId: null }, requestId: null, ip: null });
  });

  it("management: rename; removal needs a recent step-up; another user's passkey is 404; the org MFA requirement accepts a passkey", async () => {
    // A's sessions were revoked by the disable above: sign in again with the passkey
    const s = (await post('/v1/auth/passkey', { response: keyA.get((await post('/v1/auth/passkey/options', undefined)).json(), { origin: ORIGIN }) })).json();
    const auth = bearer(s.token);
    const renamed = await t.app.inject({ method: 'PATCH', url: `/v1/me/mfa/webauthn/credentials/${credA.id}`, headers: auth, payload: { name: 'Work laptop' } });
    expect(renamed.statusCode, renamed.body).toBe(200);
    expect(renamed.json().name).toBe('Work laptop');
    for (const method of ['PATCH', 'DELETE'] as const) {
      problem(await t.app.inject({ method, url: `/v1/me/mfa/webauthn/credentials/${credB.id}`, headers: auth, ...(method === 'PATCH' ? { payload: { name: 'mine now' } } : {}) }), 404, 'WEBAUTHN.CREDENTIAL_NOT_FOUND');
    }
    expect((await t.app.inject({ url: '/v1/me/mfa/webauthn/credentials', headers: b.auth })).json().data[0].name).toBe('YubiKey');

    // an old proof is not enough to remove a passkey
    await t.db.owner.updateTable('sessions').set({ mfa_at: new Date(Date.now() - 3_600_000) }).where('user_id', '=', a.userId).execute();
    problem(await t.app.inject({ method: 'DELETE', url: `/v1/me/mfa/webauthn/credentials/${credA.id}`, headers: auth }), 403, 'AUTH.STEP_UP_REQUIRED');
    problem(await post('/v1/me/mfa/webauthn/registration-options', undefined, auth), 403, 'AUTH.STEP_UP_REQUIRED');

    // TOTP next to passkeys: adding it needs the passkey proved recently; turning it off (proved with a
    // passkey) keeps the recovery codes while passkeys remain
    problem(await post('/v1/me/mfa/totp', undefined, auth), 403, 'AUTH.STEP_UP_REQUIRED');
    const stepUpOpts = (await post('/v1/me/mfa/webauthn/step-up-options', undefined, auth)).json();
    expect((await post('/v1/me/mfa/step-up', { webauthn: keyA.get(stepUpOpts, { origin: ORIGIN, credentialId: credA.credentialId }) }, auth)).statusCode).toBe(204);
    const { secret } = (await post('/v1/me/mfa/totp', undefined, auth)).json();
    const confirmed = await post('/v1/me/mfa/totp/confirm', { code: await generate({ secret }) }, auth);
    expect(confirmed.statusCode, confirmed.body).toBe(200);
    expect((await t.app.inject({ url: '/v1/me/mfa', headers: auth })).json()).toEqual({ enabled: true, totp: true, webauthnCredentials: 2, recoveryCodesRemaining: 10 });
    const proof = keyA.get((await post('/v1/me/mfa/webauthn/step-up-options', undefined, auth)).json(), { origin: ORIGIN, credentialId: credA.credentialId });
    expect((await post('/v1/me/mfa/disable', { webauthn: proof }, auth)).statusCode).toBe(204);
    expect((await t.app.inject({ url: '/v1/me/mfa', headers: auth })).json()).toEqual({ enabled: true, totp: false, webauthnCredentials: 2, recoveryCodesRemaining: 10 });

    // B's org requires MFA: B's passkey satisfies it; without it B is refused
    const policy = await t.app.inject({ method: 'PUT', url: `/v1/orgs/${b.orgId}/security-policy`, headers: b.auth, payload: { mfaRequired: true, sessionMaxAgeSec: null, idleTimeoutSec: null, ipAllowList: [] } });
    expect(policy.statusCode, policy.body).toBe(200);
    expect((await t.app.inject({ url: `/v1/orgs/${b.orgId}`, headers: b.auth })).statusCode).toBe(200);
    expect((await t.app.inject({ method: 'DELETE', url: `/v1/me/mfa/webauthn/credentials/${credB.id}`, headers: b.auth })).statusCode).toBe(204);
    problem(await t.app.inject({ url: `/v1/orgs/${b.orgId}`, headers: b.auth }), 403, 'AUTH.MFA_REQUIRED');
    expect((await t.app.inject({ url: '/v1/me/mfa', headers: b.auth })).json()).toEqual({ enabled: false, totp: false, webauthnCredentials: 0, recoveryCodesRemaining: 0 });

    expect(await auditActions(a.userId)).toEqual([
      'mfa.webauthn_registered',
      'mfa.webauthn_registered',
      'mfa.webauthn_registered',
      'mfa.webauthn_removed',
      'mfa.webauthn_counter_regression',
      'mfa.webauthn_counter_regression',
      'mfa.webauthn_renamed',
    ]);
    expect(await auditActions(b.userId)).toEqual(['mfa.webauthn_registered', 'mfa.webauthn_removed']);
  });
});
