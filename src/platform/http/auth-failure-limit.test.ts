import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { signup, type SignedUp } from '../../../test/helpers/auth.ts';
import { createTestPlatform, type TestPlatform } from '../../../test/helpers/test-platform.ts';
import { newId } from '../ids.ts';
import { createModules } from '../../main.ts';
import { AppError } from './errors.ts';

/**
 * Failed authentication and authorization misses are rate limited per client IP, and once the budget is
 * spent the token / membership lookup is not even run. Redis-backed when TEST_REDIS_URL is set.
 */
describe(`auth-failure limit per client IP (${process.env.TEST_REDIS_URL ? 'redis' : 'memory'})`, () => {
  let t: TestPlatform;
  let user: SignedUp;
  let lookups = 0;
  let lookupsFail = false;

  beforeAll(async () => {
    // A lookup is a statement that reads a credential or a membership from the database.
    t = await createTestPlatform({
      env: { RATE_LIMIT_AUTH_FAILURES: '5', RATE_LIMIT_WINDOW_SEC: '60' },
      db: { onQuery: ({ sql }) => void (/"token_hash"|"key_hash"|"memberships"/.test(sql) && lookups++) },
      // Membership lookups can be made to fail as they do when the database is unreachable.
      compose: (platform) => {
        const modules = createModules(platform);
        const real = modules.authenticator;
        return {
          ...modules,
          authenticator: {
            authenticate: (req, opts) => real.authenticate(req, opts),
            resolveAccess: async (p, orgId, opts) => {
              if (lookupsFail) throw new AppError('DB.UNAVAILABLE', 503, 'Database unavailable', {}, { 'retry-after': '1' });
              return real.resolveAccess(p, orgId, opts);
            },
          },
        };
      },
    });
    user = await signup(t.app);
  });
  afterAll(async () => t?.close());

  const from = (ip: string, url: string, authorization: string) => t.app.inject({ url, headers: { authorization }, remoteAddress: ip });

  it('random tokens: 401 with RateLimit headers until the budget is spent, then 429 before any lookup', async () => {
    const ip = '198.51.100.7';
    for (let i = 0; i < 5; i++) {
      const res = await from(ip, '/v1/me', `Bearer pls_${newId()}`);
      expect(res.statusCode).toBe(401);
      expect(res.headers['ratelimit-policy']).toBe('"auth-failures";q=5;w=60');
      expect(res.headers.ratelimit).toMatch(new RegExp(`^"auth-failures";r=${4 - i};t=\\d+$`));
    }
    const before = lookups;
    for (let i = 0; i < 20; i++) {
      const res = await from(ip, '/v1/me', `Bearer pls_${newId()}`);
      expect(res.statusCode).toBe(429);
      expect(res.headers['content-type']).toMatch(/problem\+json/);
      expect(Number(res.headers['retry-after'])).toBeGreaterThanOrEqual(1);
      expect(res.headers.ratelimit).toMatch(/^"auth-failures";r=0;t=\d+$/);
      expect(res.json()).toMatchObject({ code: 'RATE_LIMIT.AUTH_FAILURES', requestId: res.headers['x-request-id'] });
    }
    expect(lookups).toBe(before);
    // another address is unaffected, and so is a valid token from it
    expect((await from('198.51.100.8', '/v1/me', `Bearer ${user.token}`)).statusCode).toBe(200);
  });

  it("orgs the caller is not a member of: 404 until the budget is spent, then 429 (and the caller's own org still works from elsewhere)", async () => {
    const ip = '203.0.113.9';
    for (let i = 0; i < 5; i++) expect((await from(ip, `/v1/orgs/${newId()}/projects`, `Bearer ${user.token}`)).statusCode).toBe(404);
    const before = lookups;
    const blocked = await from(ip, `/v1/orgs/${newId()}/projects`, `Bearer ${user.token}`);
    expect(blocked.statusCode).toBe(429);
    expect(lookups).toBe(before);
    // Even a request the caches answer entirely (valid session, own org) is refused from a spent address,
    // in the rate limiter's single round trip, without consuming the caller's quotas.
    expect((await from('203.0.113.10', `/v1/orgs/${user.orgId}/projects`, `Bearer ${user.token}`)).statusCode).toBe(200); // cached now
    const warm = lookups;
    const own = await from(ip, `/v1/orgs/${user.orgId}/projects`, `Bearer ${user.token}`);
    expect(lookups).toBe(warm);
    expect(own.statusCode).toBe(429);
    expect(own.json()).toMatchObject({ code: 'RATE_LIMIT.AUTH_FAILURES' });
    expect(own.headers['ratelimit-policy']).toBe('"auth-failures";q=5;w=60');
    // successes never consume the budget
    for (let i = 0; i < 10; i++) expect((await from('203.0.113.10', `/v1/orgs/${user.orgId}/projects`, `Bearer ${user.token}`)).statusCode).toBe(200);
  });

  it('a lookup that fails for want of a database (503) does not spend the budget of a valid client', async () => {
    // Seen in the fault suite: with every pool connection taken, membership lookups failed and valid
    // tokens from one address were answered 429 for the rest of the window.
    const ip = '203.0.113.20';
    lookupsFail = true;
    try {
      for (let i = 0; i < 7; i++) expect((await from(ip, `/v1/orgs/${user.orgId}/projects`, `Bearer ${user.token}`)).statusCode).toBe(503);
    } finally {
      lookupsFail = false;
    }
    expect((await from(ip, `/v1/orgs/${user.orgId}/projects`, `Bearer ${user.token}`)).statusCode).toBe(200);
  });

  it('public routes are not affected by the budget (login has its own throttle)', async () => {
    const ip = '198.51.100.7';
    const res = await t.app.inject({ method: 'POST', url: '/v1/auth/login', payload: { email: user.email, password: user.password }, remoteAddress: ip });
    expect(res.statusCode).toBe(200);
  });
});
