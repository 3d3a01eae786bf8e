import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { signup } from '../../../test/helpers/auth.ts';
import { createTestPlatform, type TestPlatform } from '../../../test/helpers/test-platform.ts';

const mode = `${process.env.TEST_DATABASE_URL ? 'postgres' : 'pglite'}${process.env.TEST_REDIS_URL ? '+redis' : ''}`;

describe(`login throttling, durable in Postgres (${mode})`, () => {
  let t: TestPlatform;
  beforeAll(async () => {
    t = await createTestPlatform();
  });
  afterAll(async () => t?.close());

  const login = (email: string, password: string, ip = '127.0.0.1') =>
    t.app.inject({ method: 'POST', url: '/v1/auth/login', payload: { email, password }, remoteAddress: ip });
  /** Pre-loads n processed failures (cheaper than n argon2 runs); `ago` places them in the past. */
  const seed = (scope: 'account' | 'ip' | 'account_ip', key: string, n: number, ago = '1 minute') =>
    sql`insert into login_attempts (id, scope, key, attempted_at)
        select gen_random_uuid(), ${scope}, ${key}, now() - ${ago}::interval from generate_series(1, ${n})`.execute(t.db.owner);
  const count = async (scope: string, key: string) =>
    Number((await sql<{ n: string }>`select count(*) as n from login_attempts where scope = ${scope} and key = ${key}`.execute(t.db.owner)).rows[0]!.n);

  it('a flood of wrong passwords from elsewhere does not lock the owner out of a device they signed in from before', async () => {
    const u = await signup(t.app, {}); // signed up (a session) from the default inject address 127.0.0.1
    await seed('account', u.email, 100, '0 seconds');
    const owner = await login(u.email, u.password, '127.0.0.1');
    expect(owner.statusCode, owner.body).toBe(200);
    // an unknown device is held back (the account is under attack), but a wrong guess from the known one still fails normally
    const stranger = await login(u.email, u.password, '10.0.0.2');
    expect(stranger.statusCode).toBe(429);
    expect(stranger.json().code).toBe('AUTH.TOO_MANY_ATTEMPTS');
    // from the known device a wrong password is still refused as over the limit (the bound holds there too)
    expect((await login(u.email, 'wrong password here', '127.0.0.1')).statusCode).toBe(429);
    // Unknown emails are throttled exactly the same way (no enumeration through 429s).
    await seed('account', 'ghost@example.com', 100, '0 seconds');
    expect((await login('ghost@example.com', 'whatever it is', '10.0.0.3')).statusCode).toBe(429);
  });

  it('progressive delay per account from the 5th failure: 2^(n-5) s after the latest one, at most 300 s', async () => {
    const u = await signup(t.app);
    await seed('account', u.email, 5, '2 seconds');
    // 5 failures: 1 s after the latest, which was 2 s ago → allowed
    expect((await login(u.email, 'wrong password here', '10.0.3.1')).statusCode).toBe(401);
    // 6 failures, the latest just now: 2 s to wait
    const held = await login(u.email, u.password, '10.0.3.2');
    expect(held.statusCode).toBe(429);
    expect(Number(held.headers['retry-after'])).toBeLessThanOrEqual(2);
    await seed('account', u.email, 20, '0 seconds');
    const longer = await login(u.email, u.password, '10.0.3.3');
    expect(longer.statusCode).toBe(429);
    expect(Number(longer.headers['retry-after'])).toBeGreaterThan(290);
    expect(Number(longer.headers['retry-after'])).toBeLessThanOrEqual(300);
  });

  it('at most 10 failures per (account, IP) per hour; from a known device only the right password passes', async () => {
    const u = await signup(t.app);
    await seed('account_ip', `${u.email} 10.0.4.1`, 10);
    const blocked = await login(u.email, u.password, '10.0.4.1');
    expect(blocked.statusCode).toBe(429);
    expect(Number(blocked.headers['retry-after'])).toBeGreaterThan(3000);
    // a flood of wrong passwords from the owner's own address (where they signed up): after 5 the wrong ones are
    // 429 (progressive delay, then the pair limit), yet the right one still passes
    const statuses: number[] = [];
    for (let i = 0; i < 12; i++) statuses.push((await login(u.email, `wrong guess ${i} here`, '127.0.0.1')).statusCode);
    expect(statuses.slice(0, 5)).toEqual([401, 401, 401, 401, 401]);
    expect(statuses.slice(5).every((s) => s === 429)).toBe(true);
    await seed('account_ip', `${u.email} 127.0.0.1`, 88);
    await seed('account', u.email, 88);
    expect((await login(u.email, u.password, '127.0.0.1')).statusCode).toBe(200);
    const other = await signup(t.app);
    expect((await login(other.email, other.password, '127.0.0.1')).statusCode).toBe(200);
  });

  it('failures older than an hour no longer count; a success does not count as a failure', async () => {
    const u = await signup(t.app);
    await seed('account', u.email, 100, '61 minutes');
    expect((await login(u.email, u.password, '10.0.1.1')).statusCode).toBe(200);
    expect(await count('account', u.email)).toBe(0);
    await login(u.email, 'wrong password here', '10.0.1.1');
    expect((await login(u.email, u.password, '10.0.1.1')).statusCode).toBe(200);
    expect(await count('account', u.email)).toBe(1);
  });

  it('concurrent guesses cannot overshoot the (account, IP) limit', async () => {
    const u = await signup(t.app);
    await seed('account_ip', `${u.email} 127.0.0.1`, 5);
    const results = await Promise.all(Array.from({ length: 12 }, (_, i) => login(u.email, `wrong guess ${i}xx`, '127.0.0.1')));
    const statuses = results.map((r) => r.statusCode);
    expect(statuses.filter((s) => s === 401)).toHaveLength(5);
    expect(statuses.filter((s) => s === 429)).toHaveLength(7);
    // every processed guess is counted (the ones over the limit were answered 429 after the password check)
    expect(await count('account_ip', `${u.email} 127.0.0.1`)).toBe(17);
  });

  it('per-IP limit (1,000 failures per hour) across different accounts', async () => {
    const ip = '10.9.9.9';
    await seed('ip', ip, 999);
    expect((await login('someone@example.com', 'wrong password here', ip)).statusCode).toBe(401);
    const blocked = await login('someone-else@example.com', 'wrong password here', ip);
    expect(blocked.statusCode).toBe(429);
    // Another IP is unaffected.
    expect((await login('someone-else@example.com', 'wrong password here', '10.9.9.10')).statusCode).toBe(401);
  });
});

describe(`login throttling limits come from configuration (${mode})`, () => {
  let t: TestPlatform;
  beforeAll(async () => {
    t = await createTestPlatform({ env: { LOGIN_MAX_FAILURES_PER_ACCOUNT_PER_HOUR: '2', LOGIN_MAX_FAILURES_PER_IP_PER_HOUR: '3' } });
  });
  afterAll(async () => t?.close());

  const login = (email: string, password: string, ip: string) =>
    t.app.inject({ method: 'POST', url: '/v1/auth/login', payload: { email, password }, remoteAddress: ip });
  const count = async (scope: string, key: string) =>
    Number((await sql<{ n: string }>`select count(*) as n from login_attempts where scope = ${scope} and key = ${key}`.execute(t.db.owner)).rows[0]!.n);

  it('LOGIN_MAX_FAILURES_PER_ACCOUNT_PER_HOUR and LOGIN_MAX_FAILURES_PER_IP_PER_HOUR are enforced', async () => {
    const u = await signup(t.app);
    expect((await login(u.email, 'wrong password here', '10.1.0.1')).statusCode).toBe(401);
    expect((await login(u.email, 'wrong password here', '10.1.0.2')).statusCode).toBe(401);
    expect((await login(u.email, u.password, '10.1.0.3')).statusCode).toBe(429);
    const ip = '10.1.1.1';
    for (let i = 0; i < 3; i++) expect((await login(`nobody-${i}@example.com`, 'wrong password here', ip)).statusCode).toBe(401);
    expect((await login('nobody-4@example.com', 'wrong password here', ip)).statusCode).toBe(429);
  });

  it('wrong current passwords on POST /v1/me/password count as failures too (no unthrottled guessing)', async () => {
    const u = await signup(t.app);
    const change = (currentPassword: string) =>
      t.app.inject({ method: 'POST', url: '/v1/me/password', headers: u.auth, remoteAddress: '10.1.2.1', payload: { currentPassword, newPassword: 'another strong passphrase 7' } });
    expect((await change('wrong password one')).statusCode).toBe(403);
    expect((await change('wrong password two')).statusCode).toBe(403);
    const blocked = await change(u.password);
    expect(blocked.statusCode).toBe(429);
    expect(blocked.json().code).toBe('AUTH.TOO_MANY_ATTEMPTS');
    expect((await login(u.email, u.password, '10.1.2.2')).statusCode).toBe(429);
  });

  it('a successful password change does not count as a failure', async () => {
    const u = await signup(t.app);
    const res = await t.app.inject({ method: 'POST', url: '/v1/me/password', headers: u.auth, remoteAddress: '10.1.3.1', payload: { currentPassword: u.password, newPassword: 'another strong passphrase 7' } });
    expect(res.statusCode).toBe(200);
    expect(await count('account', u.email)).toBe(0);
  });
});
