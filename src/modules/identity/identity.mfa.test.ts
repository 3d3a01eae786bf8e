import { generate } from 'otplib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { bearer, signup, STRONG_PASSWORD, type SignedUp } from '../../../test/helpers/auth.ts';
import { createTestPlatform, type TestPlatform } from '../../../test/helpers/test-platform.ts';

const mode = `${process.env.TEST_DATABASE_URL ? 'postgres' : 'pglite'}${process.env.TEST_REDIS_URL ? '+redis' : ''}`;

/** A code for a given 30 s step offset from now (what the authenticator app would show then). */
const totp = (secret: string, stepOffset = 0) => generate({ secret, epoch: Math.floor(Date.now() / 1000) + stepOffset * 30 });

describe(`MFA: TOTP + recovery codes (${mode})`, () => {
  let t: TestPlatform;
  let user: SignedUp;
  let secret: string;
  let recoveryCodes: string[];

  const login = () => t.app.inject({ method: 'POST', url: '/v1/auth/login', payload: { email: user.email, password: STRONG_PASSWORD } });
  const second = (mfaToken: string, factor: Record<string, string>) => t.app.inject({ method: 'POST', url: '/v1/auth/login/mfa', payload: { mfaToken, ...factor } });

  beforeAll(async () => {
    // Wrong codes count as failed sign-ins; this file makes about a dozen on purpose before the last test hits the cap.
    t = await createTestPlatform({ env: { LOGIN_DELAY_AFTER_FAILURES: '1000', LOGIN_MAX_FAILURES_PER_ACCOUNT_IP_PER_HOUR: '16' } });
    user = await signup(t.app);
  });
  afterAll(async () => t?.close());

  it('enrollment: a secret, then a correct code enables it, returns 10 recovery codes, ends other password-only sessions', async () => {
    const otherDevice = (await login()).json().token;
    const start = await t.app.inject({ method: 'POST', url: '/v1/me/mfa/totp', headers: user.auth });
    expect(start.statusCode, start.body).toBe(200);
    secret = start.json().secret;
    expect(start.json().otpauthUrl).toMatch(/^otpauth:\/\/totp\/Plinth:.*secret=/);
    const wrong = await t.app.inject({ method: 'POST', url: '/v1/me/mfa/totp/confirm', headers: user.auth, payload: { code: '000000' === (await totp(secret)) ? '111111' : '000000' } });
    expect(wrong.statusCode).toBe(401);
    expect(wrong.json().code).toBe('MFA.INVALID_CODE');
    const ok = await t.app.inject({ method: 'POST', url: '/v1/me/mfa/totp/confirm', headers: user.auth, payload: { code: await totp(secret) } });
    expect(ok.statusCode, ok.body).toBe(200);
    recoveryCodes = ok.json().recoveryCodes;
    expect(ok.headers['cache-control']).toBe('no-store');
    expect(start.headers['cache-control']).toBe('no-store');
    expect(recoveryCodes).toHaveLength(10);
    expect(new Set(recoveryCodes).size).toBe(10);
    expect((await t.app.inject({ url: '/v1/me', headers: bearer(otherDevice) })).statusCode).toBe(401);
    expect((await t.app.inject({ url: '/v1/me', headers: user.auth })).statusCode).toBe(200);
    expect((await t.app.inject({ url: '/v1/me/mfa', headers: user.auth })).json()).toEqual({ enabled: true, totp: true, webauthnCredentials: 0, recoveryCodesRemaining: 10 });
    // stored hashed: no plaintext code or secret in the tables
    const rows = await t.db.owner.selectFrom('user_recovery_codes').select('code_hash').execute();
    expect(rows.map((r) => r.code_hash)).not.toContain(recoveryCodes[0]);
    const f = await t.db.owner.selectFrom('user_mfa').select('secret_ciphertext').where('user_id', '=', user.userId).executeTakeFirstOrThrow();
    expect(f.secret_ciphertext).not.toContain(secret);
    const again = await t.app.inject({ method: 'POST', url: '/v1/me/mfa/totp', headers: user.auth });
    expect(again.statusCode).toBe(409);
  });

  it('login needs the second factor; a code works once; a wrong code is refused', async () => {
    const first = await login();
    expect(first.statusCode).toBe(200);
    expect(first.json()).toMatchObject({ mfaRequired: true });
    expect(first.headers['cache-control']).toBe('no-store');
    expect(first.json().token).toBeUndefined();
    const { mfaToken } = first.json();
    expect((await second(mfaToken, { code: '12345' })).statusCode).toBe(400);
    const bad = await second(mfaToken, { code: (await totp(secret, 5)) });
    expect(bad.statusCode).toBe(401);
    // (the current step's code was spent confirming the enrollment; the next step's is accepted)
    const code = await totp(secret, 1);
    const ok = await second(mfaToken, { code });
    expect(ok.statusCode, ok.body).toBe(200);
    expect(ok.json().user.id).toBe(user.userId);
    expect((await t.app.inject({ url: '/v1/me', headers: bearer(ok.json().token) })).statusCode).toBe(200);
    // the challenge is used up, and the same code does not work on a new challenge (replay)
    expect((await second(mfaToken, { code })).statusCode).toBe(401);
    const next = (await login()).json().mfaToken;
    expect((await second(next, { code })).statusCode).toBe(401);
    expect((await second('plm_forged', { code })).json().code).toBe('MFA.CHALLENGE_INVALID');
  });

  it('a challenge dies after 5 wrong codes', async () => {
    const { mfaToken } = (await login()).json();
    for (let i = 0; i < 5; i++) expect((await second(mfaToken, { code: '000001' })).statusCode).toBe(401);
    const res = await second(mfaToken, { code: await totp(secret, -1) });
    expect(res.statusCode).toBe(401);
    expect(res.json().code).toBe('MFA.CHALLENGE_INVALID');
  });

  it('recovery codes: each works once, case and dashes do not matter; regenerating replaces them', async () => {
    const [c0, c1] = recoveryCodes as [string, string];
    const ok = await second((await login()).json().mfaToken, { recoveryCode: c0.toUpperCase() });
    expect(ok.statusCode, ok.body).toBe(200);
    expect((await second((await login()).json().mfaToken, { recoveryCode: c0 })).statusCode).toBe(401);
    expect((await t.app.inject({ url: '/v1/me/mfa', headers: user.auth })).json().recoveryCodesRemaining).toBe(9);
    const regen = await t.app.inject({ method: 'POST', url: '/v1/me/mfa/recovery-codes', headers: user.auth, payload: { recoveryCode: c1.replace('-', '') } });
    expect(regen.statusCode, regen.body).toBe(200);
    const fresh = regen.json().recoveryCodes;
    expect(fresh).toHaveLength(10);
    expect((await second((await login()).json().mfaToken, { recoveryCode: recoveryCodes[2]! })).statusCode).toBe(401);
    recoveryCodes = fresh;
  });

  it('step-up: sensitive actions want a recent second factor on this session', async () => {
    expect((await t.app.inject({ method: 'POST', url: '/v1/me/mfa/step-up', headers: user.auth, payload: { code: '999999' } })).statusCode).toBe(401);
    const up = await t.app.inject({ method: 'POST', url: '/v1/me/mfa/step-up', headers: user.auth, payload: { recoveryCode: recoveryCodes[1]! } });
    expect(up.statusCode, up.body).toBe(204);
    const p = { kind: 'user' as const, userId: user.userId, sessionId: (await t.app.inject({ url: '/v1/me/sessions', headers: user.auth })).json().data.find((s: { current: boolean }) => s.current).id, isPlatformAdmin: false };
    await expect(t.modules.identity.assertRecentMfa(p, 600)).resolves.toBeUndefined();
    await expect(t.modules.identity.assertRecentMfa({ ...p, sessionId: undefined }, 600)).rejects.toMatchObject({ code: 'AUTH.STEP_UP_REQUIRED' });
  });

  it('disabling needs a code; then login is one step again; every change is audited in the platform chain', async () => {
    expect((await t.app.inject({ method: 'POST', url: '/v1/me/mfa/disable', headers: user.auth, payload: { code: '000002' } })).statusCode).toBe(401);
    const off = await t.app.inject({ method: 'POST', url: '/v1/me/mfa/disable', headers: user.auth, payload: { recoveryCode: recoveryCodes[0]! } });
    expect(off.statusCode, off.body).toBe(204);
    const plain = await login();
    expect(plain.json().token, plain.body).toMatch(/^pls_/);
    // back on for the throttle test below
    await t.app.inject({ method: 'POST', url: '/v1/me/mfa/totp', headers: bearer(plain.json().token) }).then(async (r) => {
      const confirm = await t.app.inject({ method: 'POST', url: '/v1/me/mfa/totp/confirm', headers: bearer(plain.json().token), payload: { code: await totp(r.json().secret) } });
      expect(confirm.statusCode).toBe(200);
    });
    const actions = (await t.db.owner.selectFrom('audit_events').select('action').where('target_id', '=', user.userId).where('action', 'like', 'mfa.%').orderBy('occurred_at').orderBy('id').execute()).map((r) => r.action);
    expect(actions).toEqual(['mfa.enrollment_started', 'mfa.enabled', 'mfa.recovery_codes_regenerated', 'mfa.step_up', 'mfa.disabled', 'mfa.enrollment_started', 'mfa.enabled']);
  });

  it('wrong codes count against the account like wrong passwords: past the limit, 429 (no unlimited guessing)', async () => {
    const statuses: number[] = [];
    for (let i = 0; i < 20 && statuses.at(-1) !== 429; i++) {
      const { mfaToken } = (await login()).json();
      statuses.push((await second(mfaToken, { code: '000003' })).statusCode);
    }
    expect(statuses[0]).toBe(401);
    expect(statuses.at(-1)).toBe(429);
    expect(statuses.length).toBeLessThan(10);
  });
});
