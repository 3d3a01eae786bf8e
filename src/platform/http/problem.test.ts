import { Writable } from 'node:stream';
import { Type } from '@sinclair/typebox';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../config.ts';
import { createLogger } from '../observability/logger.ts';
import { AppError } from './errors.ts';
import { createHttpServer, type App } from './server.ts';

const logLines: string[] = [];
const sink = new Writable({
  write(chunk, _enc, cb) {
    logLines.push(chunk.toString());
    cb();
  },
});

function expectProblem(res: { statusCode: number; headers: Record<string, unknown>; body: string }, status: number, code: string) {
  expect(res.statusCode).toBe(status);
  expect(res.headers['content-type']).toMatch(/^application\/problem\+json/);
  const body = JSON.parse(res.body);
  expect(body).toMatchObject({ status, code, title: expect.any(String), detail: expect.any(String) });
  expect(body.type).toMatch(/^https:\/\//);
  expect(body.requestId).toBe(res.headers['x-request-id']);
  expect(res.body).not.toMatch(/at .*\.ts:\d+|stack|select |insert into/i);
  return body;
}

describe('HTTP kernel: every error is RFC 9457 problem+json', () => {
  let app: App;
  const lifecycle = { draining: false, closing: false };

  beforeAll(async () => {
    const config = loadConfig({ NODE_ENV: 'test', BODY_LIMIT_BYTES: '2048' });
    app = await createHttpServer({ config, logger: createLogger('info', sink), lifecycle });
    app.post(
      '/v1/things',
      { schema: { body: Type.Object({ name: Type.String({ minLength: 1, maxLength: 10 }) }, { additionalProperties: false }) } },
      async (req) => ({ ok: true, name: (req.body as { name: string }).name }),
    );
    app.get('/v1/things/:id', { schema: { params: Type.Object({ id: Type.String({ format: 'uuid' }) }) } }, async () => {
      throw new AppError('THINGS.NOT_FOUND', 404, 'Thing not found');
    });
    app.get('/v1/unprocessable', async () => {
      throw new AppError('THINGS.INVALID_STATE', 422, 'The thing is archived', { thingState: 'archived' });
    });
    app.get('/v1/limited', async () => {
      throw new AppError('RATE_LIMIT.EXCEEDED', 429, 'Too many requests', {}, { 'retry-after': '7' });
    });
    app.get('/v1/forbidden', async () => {
      throw new AppError('AUTH.FORBIDDEN', 403, 'Missing permission projects:write');
    });
    app.get('/v1/unauth', async () => {
      throw new AppError('AUTH.UNAUTHENTICATED', 401, 'A bearer token is required');
    });
    app.get('/v1/boom', async () => {
      throw new Error('select * from users where password_hash = $1 failed: connection reset');
    });
    // A refused login (app-role password changed under a running process), from Postgres and from PgBouncer.
    app.get('/v1/login-refused/:who', async (request) => {
      const postgres = (request.params as { who: string }).who === 'postgres';
      throw Object.assign(new Error(postgres ? 'password authentication failed for user "plinth_app"' : 'SASL authentication failed'), {
        code: postgres ? '28P01' : '08P01',
      });
    });
    app.get('/v1/unavailable', async () => {
      throw new AppError('DB.UNAVAILABLE', 503, 'Database unavailable', {}, { 'retry-after': '2' });
    });
    await app.ready();
  });
  afterAll(async () => app?.close());

  it('400 on schema validation, with the failing path', async () => {
    const res = await app.inject({ method: 'POST', url: '/v1/things', payload: { name: '' } });
    const body = expectProblem(res, 400, 'HTTP.VALIDATION_FAILED');
    expect(body.errors[0]).toMatchObject({ in: 'body', path: '/name' });
  });

  it('400 on unknown properties (no mass assignment through the schema)', async () => {
    const res = await app.inject({ method: 'POST', url: '/v1/things', payload: { name: 'a', role: 'owner' } });
    expectProblem(res, 400, 'HTTP.VALIDATION_FAILED');
  });

  it('400 on malformed JSON', async () => {
    const res = await app.inject({ method: 'POST', url: '/v1/things', headers: { 'content-type': 'application/json' }, payload: '{"name":' });
    expectProblem(res, 400, 'HTTP.MALFORMED_JSON');
  });

  it('400 on a bad path parameter', async () => {
    const res = await app.inject({ method: 'GET', url: '/v1/things/not-a-uuid' });
    expectProblem(res, 400, 'HTTP.VALIDATION_FAILED');
  });

  it('401, 403, 422, 429 from services keep their code, detail and headers', async () => {
    expectProblem(await app.inject({ url: '/v1/unauth' }), 401, 'AUTH.UNAUTHENTICATED');
    expectProblem(await app.inject({ url: '/v1/forbidden' }), 403, 'AUTH.FORBIDDEN');
    const unp = expectProblem(await app.inject({ url: '/v1/unprocessable' }), 422, 'THINGS.INVALID_STATE');
    expect(unp.thingState).toBe('archived');
    const limited = await app.inject({ url: '/v1/limited' });
    expectProblem(limited, 429, 'RATE_LIMIT.EXCEEDED');
    expect(limited.headers['retry-after']).toBe('7');
  });

  it("404 for a service's missing resource and for Fastify's unknown route", async () => {
    expectProblem(await app.inject({ url: '/v1/things/0190a4c2-8f5e-7cc3-b5a8-3f1e3c0d9a11' }), 404, 'THINGS.NOT_FOUND');
    expectProblem(await app.inject({ url: '/v1/nothing-here' }), 404, 'HTTP.NOT_FOUND');
  });

  it('405 with Allow for a known path and the wrong method', async () => {
    const res = await app.inject({ method: 'DELETE', url: '/v1/things' });
    expectProblem(res, 405, 'HTTP.METHOD_NOT_ALLOWED');
    expect(res.headers.allow).toBe('POST');
  });

  it('413 when the body exceeds the limit', async () => {
    const res = await app.inject({ method: 'POST', url: '/v1/things', payload: { name: 'x'.repeat(5000) } });
    expectProblem(res, 413, 'HTTP.BODY_TOO_LARGE');
  });

  it('415 for a body that is not JSON', async () => {
    const res = await app.inject({ method: 'POST', url: '/v1/things', headers: { 'content-type': 'text/plain' }, payload: 'name=x' });
    expectProblem(res, 415, 'HTTP.UNSUPPORTED_MEDIA_TYPE');
  });

  it('500 hides the error: no SQL, no stack, but the log has it with the request id', async () => {
    const res = await app.inject({ url: '/v1/boom', headers: { 'x-request-id': 'trace-me-123' } });
    const body = expectProblem(res, 500, 'HTTP.INTERNAL');
    expect(body.detail).toBe('The server could not complete the request');
    expect(res.body).not.toContain('password_hash');
    const logged = logLines.map((l) => JSON.parse(l)).find((l) => l.requestId === 'trace-me-123' && l.err);
    expect(logged?.err?.message).toContain('connection reset');
  });

  it('503 keeps Retry-After', async () => {
    const res = await app.inject({ url: '/v1/unavailable' });
    expectProblem(res, 503, 'DB.UNAVAILABLE');
    expect(res.headers['retry-after']).toBe('2');
  });

  it.each(['postgres', 'pgbouncer'])('a refused database login (%s) is 503 DB.UNAVAILABLE with Retry-After, not 500', async (who) => {
    const res = await app.inject({ url: `/v1/login-refused/${who}` });
    expectProblem(res, 503, 'DB.UNAVAILABLE');
    expect(res.headers['retry-after']).toBe('2');
    expect(res.body).not.toContain('plinth_app');
  });

  it('echoes a valid X-Request-Id and replaces an invalid one', async () => {
    const ok = await app.inject({ url: '/v1/nothing', headers: { 'x-request-id': 'abc-123' } });
    expect(ok.headers['x-request-id']).toBe('abc-123');
    const bad = await app.inject({ url: '/v1/nothing', headers: { 'x-request-id': 'bad id\nwith newline' } });
    expect(bad.headers['x-request-id']).toMatch(/^[0-9a-f-]{36}$/);
  });

  it('sets security headers', async () => {
    const res = await app.inject({ url: '/v1/nothing' });
    expect(res.headers['x-content-type-options']).toBe('nosniff');
    expect(res.headers['content-security-policy']).toContain("default-src 'none'");
    expect(res.headers['strict-transport-security']).toBeDefined();
  });

  it('documents the problem shape and serves OpenAPI 3.1 and the docs page', async () => {
    const spec = (await app.inject({ url: '/openapi.json' })).json();
    expect(spec.openapi).toBe('3.1.0');
    expect(JSON.stringify(spec)).toContain('Problem');
    const docs = await app.inject({ url: '/docs/' });
    expect(docs.statusCode).toBe(200);
    expect(docs.headers['content-type']).toMatch(/text\/html/);
    // The docs page's own CSP replaces the API's static one (which would block its scripts).
    expect(docs.headers['content-security-policy']).toContain('script-src');
    expect(docs.headers['x-content-type-options']).toBe('nosniff');
  });

  it('503 problem+json for requests that arrive while the instance is closing', async () => {
    lifecycle.closing = true;
    try {
      const res = await app.inject({ url: '/v1/things/0190a4c2-8f5e-7cc3-b5a8-3f1e3c0d9a11' });
      expectProblem(res, 503, 'HTTP.SHUTTING_DOWN');
      expect(res.headers['retry-after']).toBe('1');
    } finally {
      lifecycle.closing = false;
    }
  });
});
