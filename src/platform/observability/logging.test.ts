import { Writable } from 'node:stream';
import { Type } from '@sinclair/typebox';
import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { signup, STRONG_PASSWORD } from '../../../test/helpers/auth.ts';
import { createTestPlatform, type TestPlatform } from '../../../test/helpers/test-platform.ts';
import { createApiApp } from '../../main.ts';
import type { Authenticator } from '../http/auth.ts';
import type { App } from '../http/server.ts';
import { createLogger } from './logger.ts';
import { createQueryObserver, normalizeSql, sqlOperation } from './query-observer.ts';
import { redactSecrets } from './redact.ts';

const ORG = '0190a4c2-8f5e-7cc3-b5a8-3f1e3c0d9a11';
const USER = '0190a4c2-8f5e-7cc3-b5a8-3f1e3c0d9a22';
const SECRETS = ['sess-tok-SECRET-1', 'cookie-SECRET-2', 'pw-SECRET-3', 'tok-SECRET-4', 'shh-SECRET-5', 'key-SECRET-6', 'deep-SECRET-7', 'err-SECRET-8', 'lit-SECRET-9'];

const lines: Array<Record<string, any>> = [];
const raw: string[] = [];
const sink = new Writable({
  write(chunk, _enc, cb) {
    raw.push(chunk.toString());
    for (const l of chunk.toString().split('\n')) if (l.trim()) lines.push(JSON.parse(l));
    cb();
  },
});

/** The kernel's Authenticator contract, as the identity module implements it: a known token → principal. */
const authenticator: Authenticator = {
  async authenticate(req) {
    return req.headers.authorization === `Bearer ${SECRETS[0]}` ? { kind: 'user', userId: USER, isPlatformAdmin: false } : null;
  },
  async resolveAccess(_principal, orgId) {
    return orgId === ORG ? { orgId, role: 'member', permissions: new Set(['things:write']) } : null;
  },
};

describe('logs: request context, redaction, slow queries', () => {
  let tp: TestPlatform;
  let app: App;

  beforeAll(async () => {
    const logger = createLogger('info', sink);
    tp = await createTestPlatform({ logger, db: { onQuery: createQueryObserver({ logger, slowQueryMs: 40 }) } });
    app = await createApiApp(tp, {
      authenticator,
      routes: [
        {
          name: 'probe',
          prefix: '/v1',
          plugin: async (scope) => {
            scope.post(
              '/orgs/:orgId/things',
              { config: { permission: 'things:write' }, schema: { body: Type.Object({}, { additionalProperties: true }) } },
              async (request) => {
                // What a careless handler might log: every header and the whole body.
                request.log.info({ headers: request.headers, body: request.body }, 'received');
                return { ok: true };
              },
            );
            scope.post('/orgs/:orgId/fail', { config: { permission: 'things:write' } }, async () => {
              throw Object.assign(new Error('upstream refused'), { token: SECRETS[7], response: { headers: { authorization: SECRETS[7] } } });
            });
            scope.post('/orgs/:orgId/admin', { config: { permission: 'things:admin' } }, async () => ({ ok: true }));
          },
        },
      ],
    });
  });
  afterAll(async () => {
    await app?.close();
    await tp?.close();
  });

  const secretHeaders = { authorization: `Bearer ${SECRETS[0]}`, cookie: `sid=${SECRETS[1]}`, 'x-api-key': SECRETS[5] };
  const secretBody = {
    name: 'visible-name',
    password: SECRETS[2],
    token: SECRETS[3],
    settings: { secret: SECRETS[4], apiKey: SECRETS[5] },
    profile: { login: { password: SECRETS[6], hint: 'visible-hint' } },
  };

  it('writes JSON lines with requestId, userId and tenantId once known, and no secret anywhere', async () => {
    lines.length = 0;
    raw.length = 0;
    const ok = await app.inject({ method: 'POST', url: `/v1/orgs/${ORG}/things`, headers: { ...secretHeaders, 'x-request-id': 'req-log-1' }, payload: secretBody });
    expect(ok.statusCode).toBe(200);
    const failed = await app.inject({ method: 'POST', url: `/v1/orgs/${ORG}/fail`, headers: { ...secretHeaders, 'x-request-id': 'req-log-2' }, payload: secretBody });
    expect(failed.statusCode).toBe(500);
    const forbidden = await app.inject({ method: 'POST', url: `/v1/orgs/${ORG}/admin`, headers: { ...secretHeaders, 'x-request-id': 'req-log-3' }, payload: {} });
    expect(forbidden.statusCode).toBe(403);
    const anonymous = await app.inject({ method: 'POST', url: `/v1/orgs/${ORG}/things`, headers: { 'x-request-id': 'req-log-4', cookie: `sid=${SECRETS[1]}` }, payload: secretBody });
    expect(anonymous.statusCode).toBe(401);

    const all = raw.join('');
    for (const secret of SECRETS) expect(all, secret).not.toContain(secret);
    expect(all).toContain('[redacted]');

    const received = lines.find((l) => l.msg === 'received')!;
    expect(received).toMatchObject({ requestId: 'req-log-1', userId: USER, tenantId: ORG, level: 'info' });
    expect(received.body.name).toBe('visible-name');
    expect(received.headers.authorization).toBe('[redacted]');
    expect(received.body.profile.login).toEqual({ password: '[redacted]', hint: 'visible-hint' });

    const completed = (id: string) => lines.find((l) => l.msg === 'request completed' && l.requestId === id)!;
    expect(completed('req-log-1')).toMatchObject({ userId: USER, tenantId: ORG, status: 200, route: '/v1/orgs/:orgId/things' });
    expect(completed('req-log-2')).toMatchObject({ userId: USER, tenantId: ORG, status: 500, level: 'error' });
    // 403: authenticated but refused before the handler: the user is known, the org access is not granted.
    expect(completed('req-log-3')).toMatchObject({ userId: USER, status: 403 });
    expect(completed('req-log-3').tenantId).toBeUndefined();
    expect(completed('req-log-4')).toMatchObject({ status: 401 });
    expect(completed('req-log-4').userId).toBeUndefined();
    const failure = lines.find((l) => l.requestId === 'req-log-2' && l.err)!;
    expect(failure.err.message).toBe('upstream refused');
    expect(failure.err.token).toBe('[redacted]');
    // No stack or SQL leaks into the response either.
    expect(failed.body).not.toMatch(/upstream refused|SECRET/);
  });

  it('with the real identity module: signup, then org requests logged with that user and org, password never logged', async () => {
    lines.length = 0;
    raw.length = 0;
    const user = await signup(tp.app, { organizationName: 'Log Org' });
    const members = await tp.app.inject({ url: `/v1/orgs/${user.orgId}/members`, headers: { ...user.auth, 'x-request-id': 'req-real-1' } });
    expect(members.statusCode).toBe(200);
    const line = lines.find((l) => l.msg === 'request completed' && l.requestId === 'req-real-1')!;
    expect(line).toMatchObject({ userId: user.userId, tenantId: user.orgId, route: '/v1/orgs/:orgId/members', status: 200 });
    const all = raw.join('');
    expect(all).not.toContain(STRONG_PASSWORD);
    expect(all).not.toContain(user.token);
  });

  it('logs a slow query with its normalized statement, never its parameters or literals', async () => {
    lines.length = 0;
    raw.length = 0;
    await sql`select pg_sleep(${0.08}) as slept, ${'param-SECRET-10'} as p, ${sql.lit(SECRETS[8])} as l, 42 as answer`.execute(tp.db.app);
    const slow = lines.find((l) => l.msg === 'slow query')!;
    expect(slow).toBeDefined();
    expect(slow.level).toBe('warn');
    expect(slow.durationMs).toBeGreaterThanOrEqual(40);
    expect(slow.operation).toBe('select');
    expect(slow.sql).toBe('select pg_sleep($1) as slept, $2 as p, ? as l, ? as answer');
    expect(raw.join('')).not.toMatch(/SECRET/);

    // Fast queries are measured but not logged.
    lines.length = 0;
    await sql`select 1`.execute(tp.db.app);
    expect(lines.filter((l) => l.msg === 'slow query')).toHaveLength(0);
  });

  it('normalizes statements: literals stripped, whitespace collapsed, placeholders and identifiers kept', () => {
    expect(normalizeSql(`select *\n  from "t1" where a = 'x''y' and b = E'z\\'q' and c = 3.5 and d = $12`)).toBe(
      'select * from "t1" where a = ? and b = ? and c = ? and d = $12',
    );
    expect(normalizeSql('x'.repeat(3000)).length).toBeLessThanOrEqual(2001);
    expect(sqlOperation('  insert into x values ($1)')).toBe('insert');
    expect(sqlOperation('(select 1)')).toBe('select');
    expect(sqlOperation('vacuum analyze')).toBe('other');
  });

  it('redacts by field name at any depth without touching the caller\'s objects', () => {
    const input = { a: { b: { c: { d: { apiKey: 'k', keep: 1 } } } }, list: [{ refreshToken: 'r' }], plain: 'x' };
    const out = redactSecrets(input);
    expect(out).toEqual({ a: { b: { c: { d: { apiKey: '[redacted]', keep: 1 } } } }, list: [{ refreshToken: '[redacted]' }], plain: 'x' });
    expect(input.a.b.c.d.apiKey).toBe('k');
    expect(input.list[0]!.refreshToken).toBe('r');
    const clean = { method: 'GET', status: 200 };
    expect(redactSecrets(clean)).toBe(clean);
    const err = Object.assign(new TypeError('boom'), { secret: 's' });
    const redacted = redactSecrets({ err }).err;
    expect(redacted).toBeInstanceOf(TypeError);
    expect(redacted.message).toBe('boom');
    expect(redacted.secret).toBe('[redacted]');
    expect(err.secret).toBe('s');
  });
});
