import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { bearer, signup, STRONG_PASSWORD } from '../helpers/auth.ts';
import { createTestPlatform, type TestPlatform } from '../helpers/test-platform.ts';

/** Edge protection on the real modules (identity sessions, tenancy orgs), not test stand-ins. */
describe('edge protection on the real composition', () => {
  let t: TestPlatform;

  beforeAll(async () => {
    t = await createTestPlatform({ env: { RATE_LIMIT_IP: '1000' } });
  });
  afterAll(async () => {
    await t?.close();
  });

  it('signup with an Idempotency-Key is replayed (same user and token), not run twice', async () => {
    const payload = { email: `idem-${Date.now()}@example.com`, password: STRONG_PASSWORD, name: 'Idem', organizationName: 'Idem Co' };
    const send = () => t.app.inject({ method: 'POST', url: '/v1/auth/signup', headers: { 'idempotency-key': 'signup-once' }, payload });
    const first = await send();
    expect(first.statusCode).toBe(201);
    expect(first.headers['ratelimit-policy']).toBe('"ip";q=1000;w=60');
    const again = await send();
    expect(again.statusCode).toBe(201);
    expect(again.headers['idempotent-replayed']).toBe('true');
    expect(again.json().user.id).toBe(first.json().user.id);
    expect(again.json().token).toBe(first.json().token);
    // Without the key the same signup is a new request: the email is taken now.
    const duplicate = await t.app.inject({ method: 'POST', url: '/v1/auth/signup', payload });
    expect(duplicate.statusCode).toBeGreaterThanOrEqual(400);
    expect(duplicate.statusCode).toBeLessThan(500);
  });

  it('signed-in requests are limited per session and per org, with IETF headers', async () => {
    const alice = await signup(t.app);
    const me = await t.app.inject({ url: '/v1/me', headers: alice.auth });
    expect(me.statusCode).toBe(200);
    expect(me.headers['ratelimit-policy']).toBe('"principal";q=1200;w=60');
    const org = await t.app.inject({ url: `/v1/orgs/${alice.orgId}`, headers: alice.auth });
    expect(org.statusCode).toBe(200);
    expect(org.headers['ratelimit-policy']).toBe('"principal";q=1200;w=60, "org";q=6000;w=60');
    // GCRA refills one request every 50 ms (1200/min), so under load the second request may see 1199.
    expect(org.headers.ratelimit).toMatch(/^"principal";r=119[89];t=\d+$/);
    // A forged token is 401 and costs no principal or org anything, only its address's auth-failure budget.
    const forged = await t.app.inject({ url: `/v1/orgs/${alice.orgId}`, headers: bearer('forged') });
    expect(forged.statusCode).toBe(401);
    expect(forged.headers.ratelimit).toMatch(/^"auth-failures";r=\d+;t=\d+$/);
  });

  it('an empty body with Content-Type: application/json is accepted on routes that take none (DELETE, logout)', async () => {
    const bob = await signup(t.app);
    const other = await t.app.inject({ method: 'POST', url: '/v1/auth/login', payload: { email: bob.email, password: bob.password } });
    const json = { 'content-type': 'application/json' };
    const sessions = (await t.app.inject({ url: '/v1/me/sessions', headers: bob.auth })).json().data as Array<{ id: string; current: boolean }>;
    const notCurrent = sessions.find((s) => !s.current)!;
    const del = await t.app.inject({ method: 'DELETE', url: `/v1/me/sessions/${notCurrent.id}`, headers: { ...bob.auth, ...json }, payload: '' });
    expect(del.statusCode, del.body).toBe(204);
    expect((await t.app.inject({ url: '/v1/me', headers: bearer(other.json().token) })).statusCode).toBe(401);
    const own = await t.app.inject({ method: 'POST', url: '/v1/auth/logout', headers: { ...bob.auth, ...json }, payload: '' });
    expect(own.statusCode, own.body).toBe(204);
  });
});
