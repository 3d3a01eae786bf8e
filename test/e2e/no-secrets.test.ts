import { createHash } from 'node:crypto';
import { Writable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createLogger } from '../../src/platform/observability/logger.ts';
import { bearer } from '../helpers/auth.ts';
import { createTestPlatform, type TestPlatform } from '../helpers/test-platform.ts';

/**
 * Drives every credential-bearing flow with the production logger (redaction on) at debug level and
 * checks that no log line and no response body carries a password, a password hash, a token, a token
 * hash or an API key secret — except the one response that issues that credential.
 */
describe(`no passwords, hashes, tokens or secrets in responses or logs (${process.env.TEST_DATABASE_URL ? 'postgres' : 'pglite'})`, () => {
  let t: TestPlatform;
  const lines: string[] = [];
  const bodies: Array<{ what: string; body: string; issues?: string }> = [];

  beforeAll(async () => {
    const sink = new Writable({
      write(chunk, _enc, cb) {
        lines.push(String(chunk));
        cb();
      },
    });
    t = await createTestPlatform({ logger: createLogger('debug', sink) });
  });
  afterAll(async () => t?.close());

  async function call(what: string, opts: Record<string, unknown>, issues?: (json: any) => string) {
    const res = await t.app.inject(opts as any);
    const json = res.body ? JSON.parse(res.body) : undefined;
    bodies.push({ what, body: res.body, issues: issues?.(json) });
    return { status: res.statusCode, json };
  }

  it('holds across signup, login, password change, invitations, API keys, sessions and errors', async () => {
    const password = 'Unique-Pass-Phrase-7431';
    const newPassword = 'Second-Pass-Phrase-9902';
    const tokens: string[] = [];
    const su = await call('signup', { method: 'POST', url: '/v1/auth/signup', payload: { email: 'sec@example.com', password, name: 'Sec', organizationName: 'Sec Org' } }, (j) => j.token);
    expect(su.status).toBe(201);
    tokens.push(su.json.token);
    const orgId = su.json.organization.id;
    await call('weak signup', { method: 'POST', url: '/v1/auth/signup', payload: { email: 'sec2@example.com', password: 'password1', name: 'S', organizationName: 'S' } });
    await call('bad login', { method: 'POST', url: '/v1/auth/login', payload: { email: 'sec@example.com', password: 'Wrong-Pass-Phrase-1' } });
    const li = await call('login', { method: 'POST', url: '/v1/auth/login', payload: { email: 'sec@example.com', password } }, (j) => j.token);
    tokens.push(li.json.token);
    const auth = bearer(li.json.token);
    await call('me', { url: '/v1/me', headers: auth });
    await call('sessions', { url: '/v1/me/sessions', headers: auth });
    const inv = await call('invite', { method: 'POST', url: `/v1/orgs/${orgId}/invitations`, headers: auth, payload: { email: 'friend@example.com', role: 'member' } }, (j) => j.token);
    tokens.push(inv.json.token);
    const friend = await call('friend signup', { method: 'POST', url: '/v1/auth/signup', payload: { email: 'friend@example.com', password: newPassword, name: 'F', organizationName: 'F' } }, (j) => j.token);
    tokens.push(friend.json.token);
    await call('accept', { method: 'POST', url: `/v1/invitations/${inv.json.token}/accept`, headers: bearer(friend.json.token) });
    await call('invitations', { url: `/v1/orgs/${orgId}/invitations`, headers: auth });
    const key = await call('key', { method: 'POST', url: `/v1/orgs/${orgId}/api-keys`, headers: auth, payload: { name: 'k', scopes: ['org:read'] } }, (j) => j.secret);
    tokens.push(key.json.secret);
    await call('use key', { url: `/v1/orgs/${orgId}`, headers: bearer(key.json.secret) });
    await call('keys', { url: `/v1/orgs/${orgId}/api-keys`, headers: auth });
    await call('audit', { url: `/v1/orgs/${orgId}/audit-events`, headers: auth });
    const pw = await call('password', { method: 'POST', url: '/v1/me/password', headers: auth, payload: { currentPassword: password, newPassword: 'Third-Pass-Phrase-5550' } }, (j) => j.token);
    tokens.push(pw.json.token);
    await call('old token', { url: '/v1/me', headers: auth });
    await call('logout', { method: 'POST', url: '/v1/auth/logout', headers: bearer(pw.json.token) });

    const hashes = (await t.db.app.selectFrom('users').select('password_hash').execute()).map((r) => r.password_hash as string);
    expect(hashes.length).toBeGreaterThan(0);
    const forbidden = [
      password,
      newPassword,
      'Third-Pass-Phrase-5550',
      'Wrong-Pass-Phrase-1',
      ...hashes,
      ...tokens,
      ...tokens.map((x) => createHash('sha256').update(x).digest('hex')),
      '$argon2id$',
    ];
    expect(lines.length).toBeGreaterThan(10);
    const log = lines.join('');
    for (const secret of forbidden) expect(log.includes(secret), `log contains ${secret.slice(0, 12)}…`).toBe(false);
    for (const b of bodies) {
      for (const secret of forbidden) {
        if (secret === b.issues) continue;
        expect(b.body.includes(secret), `${b.what} response contains ${secret.slice(0, 12)}…`).toBe(false);
      }
    }
  });

  it('responses that carry a secret are Cache-Control: no-store; ordinary reads are not', async () => {
    const email = `nostore-${Date.now()}@example.com`;
    const password = 'Cache-Less-Phrase-4417';
    const signup = await t.app.inject({ method: 'POST', url: '/v1/auth/signup', payload: { email, password, name: 'N', organizationName: 'N Org' } });
    const { token, organization } = signup.json();
    const auth = bearer(token);
    const responses = {
      signup,
      login: await t.app.inject({ method: 'POST', url: '/v1/auth/login', payload: { email, password } }),
      apiKey: await t.app.inject({ method: 'POST', url: `/v1/orgs/${organization.id}/api-keys`, headers: auth, payload: { name: 'k', scopes: ['org:read'] } }),
      webhook: await t.app.inject({ method: 'POST', url: `/v1/orgs/${organization.id}/webhooks`, headers: auth, payload: { url: 'http://127.0.0.1:9/h', events: ['projects.task_created'] } }),
      invitation: await t.app.inject({ method: 'POST', url: `/v1/orgs/${organization.id}/invitations`, headers: auth, payload: { email: 'inv-nostore@example.com', role: 'viewer' } }),
      password: await t.app.inject({ method: 'POST', url: '/v1/me/password', headers: auth, payload: { currentPassword: password, newPassword: 'Other-Cache-Less-8812' } }),
    };
    for (const [what, res] of Object.entries(responses)) {
      expect(res.statusCode, `${what}: ${res.body}`).toBeLessThan(300);
      expect(res.headers['cache-control'], what).toBe('no-store');
    }
    const read = await t.app.inject({ url: `/v1/orgs/${organization.id}`, headers: bearer(responses.password.json().token) });
    expect(read.statusCode).toBe(200);
    expect(read.headers['cache-control']).toBeUndefined();
  });
});
