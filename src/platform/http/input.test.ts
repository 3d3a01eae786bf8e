import net from 'node:net';
import type { AddressInfo } from 'node:net';
import { Type } from '@sinclair/typebox';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../config.ts';
import { createLogger } from '../observability/logger.ts';
import { findHostileValue, isStrictDate, isStrictDateTime, MAX_JSON_DEPTH, stringProblem } from './input.ts';
import { decodeCursor, encodeCursor } from './pagination.ts';
import { createHttpServer, MAX_PARAM_LENGTH, type App } from './server.ts';

type Res = { statusCode: number; headers: Record<string, unknown>; body: string };

function expectProblem(res: Res, status: number, code?: string) {
  expect(res.statusCode, res.body).toBe(status);
  expect(res.headers['content-type']).toMatch(/^application\/problem\+json/);
  const body = JSON.parse(res.body);
  if (code) expect(body.code).toBe(code);
  expect(body.requestId).toBe(res.headers['x-request-id']);
  expect(res.headers['x-content-type-options']).toBe('nosniff');
  return body;
}

describe('input hardening: every malformed request is a 400 problem naming the field', () => {
  let app: App;
  const stored: unknown[] = [];

  beforeAll(async () => {
    const config = loadConfig({ NODE_ENV: 'test' });
    app = await createHttpServer({ config, logger: createLogger('silent'), lifecycle: { draining: false, closing: false } });
    const body = Type.Object(
      {
        title: Type.String({ maxLength: 100 }),
        labels: Type.Optional(Type.Array(Type.String())),
        archived: Type.Optional(Type.Boolean()),
        description: Type.Optional(Type.String()),
        note: Type.Optional(Type.Union([Type.String(), Type.Null()])),
        at: Type.Optional(Type.String({ format: 'date-time' })),
        day: Type.Optional(Type.String({ format: 'date' })),
        n: Type.Optional(Type.Number()),
        meta: Type.Optional(Type.Record(Type.String(), Type.Unknown())),
      },
      { additionalProperties: false },
    );
    app.post('/v1/things', { schema: { body } }, async (req) => {
      stored.push(req.body);
      return { ok: true };
    });
    app.get(
      '/v1/things',
      {
        schema: {
          querystring: Type.Object(
            {
              q: Type.Optional(Type.String()),
              limit: Type.Optional(Type.Integer({ minimum: 1 })),
              n: Type.Optional(Type.Number()),
              archived: Type.Optional(Type.Boolean()),
              since: Type.Optional(Type.String({ format: 'date-time' })),
            },
            { additionalProperties: false },
          ),
        },
      },
      async (req) => ({ query: req.query }),
    );
    app.get('/v1/things/:name', { schema: { params: Type.Object({ name: Type.String() }) } }, async (req) => req.params);
    app.delete('/v1/things/:name', { schema: { params: Type.Object({ name: Type.String() }) } }, async (_req, reply) => reply.code(204).send());
    app.post('/v1/secret', { schema: { response: { 201: Type.Object({ id: Type.String(), secret: Type.String() }) } } }, async (_req, reply) =>
      reply.code(201).send({ id: '1', secret: 's' }),
    );
    app.get('/v1/plain', async () => ({ ok: true }));
    await app.ready();
  });
  afterAll(async () => app?.close());

  const post = (payload: unknown) =>
    app.inject({ method: 'POST', url: '/v1/things', headers: { 'content-type': 'application/json' }, payload: typeof payload === 'string' ? payload : JSON.stringify(payload) });

  it('refuses U+0000 in body strings, object keys, query and path parameters', async () => {
    const b = expectProblem(await post({ title: 'a\u0000b' }), 400, 'HTTP.VALIDATION_FAILED');
    expect(b.errors[0]).toMatchObject({ in: 'body', path: '/title' });
    expect(b.detail).toContain('/title');
    expectProblem(await post({ title: 'x', meta: { 'k\u0000': 1 } }), 400, 'HTTP.VALIDATION_FAILED');
    expectProblem(await post({ title: 'x', labels: ['ok', 'bad\u0000'] }), 400, 'HTTP.VALIDATION_FAILED');
    const q = expectProblem(await app.inject({ url: '/v1/things?q=a%00b' }), 400, 'HTTP.VALIDATION_FAILED');
    expect(q.errors[0]).toMatchObject({ in: 'querystring', path: '/q' });
    const p = expectProblem(await app.inject({ url: '/v1/things/a%00b' }), 400, 'HTTP.VALIDATION_FAILED');
    expect(p.errors[0]).toMatchObject({ in: 'params', path: '/name' });
  });

  it('refuses lone UTF-16 surrogates, accepts paired ones (emoji)', async () => {
    const b = expectProblem(await post('{"title":"x\\ud800y"}'), 400, 'HTTP.VALIDATION_FAILED');
    expect(b.errors[0].path).toBe('/title');
    expectProblem(await post('{"title":"\\udc00"}'), 400, 'HTTP.VALIDATION_FAILED');
    expect((await post({ title: 'ok 😀' })).statusCode).toBe(200);
  });

  it('date-time: no year 0000, no offset beyond ±15:59, no leap second, no impossible dates', async () => {
    for (const at of ['0000-01-01T00:00:00Z', '2024-01-01T00:00:00+16:00', '2024-01-01T00:00:00-99:00', '2016-12-31T23:59:60Z', '2023-02-29T00:00:00Z', '2024-04-31T10:00:00Z', '2024-01-01T24:00:00Z']) {
      const b = expectProblem(await post({ title: 'x', at }), 400, 'HTTP.VALIDATION_FAILED');
      expect(b.errors[0].path).toBe('/at');
      expectProblem(await app.inject({ url: `/v1/things?since=${encodeURIComponent(at)}` }), 400, 'HTTP.VALIDATION_FAILED');
    }
    expectProblem(await post({ title: 'x', day: '2023-02-29' }), 400, 'HTTP.VALIDATION_FAILED');
    expectProblem(await post({ title: 'x', day: '0000-01-01' }), 400, 'HTTP.VALIDATION_FAILED');
    expect((await post({ title: 'x', at: '2024-02-29T23:59:59.123456+15:59', day: '2024-02-29' })).statusCode).toBe(200);
    expect(isStrictDateTime('2024-06-01T12:00:00Z')).toBe(true);
    expect(isStrictDate('1900-02-29')).toBe(false);
    expect(isStrictDate('2000-02-29')).toBe(true);
  });

  it('forged cursors with impossible dates are a 400 through the platform helpers, never a 500', async () => {
    const forged = encodeCursor('fp', ['0000-01-01T00:00:00Z', 1]);
    expect(() => decodeCursor(forged, 'fp', ([v]) => typeof v === 'string' && isStrictDateTime(v))).toThrow(/cursor/);
    expect(() => decodeCursor(encodeCursor('fp', ['a\u0000', 1]), 'fp')).toThrow(/cursor/);
    expect(() => decodeCursor(Buffer.from('{"v":1,"f":"fp","k":[1e999,1]}').toString('base64url'), 'fp')).toThrow(/cursor/);
  });

  it('non-finite numbers are refused (limit=Infinity, n=NaN)', async () => {
    for (const qs of ['limit=Infinity', 'limit=-Infinity', 'n=Infinity', 'n=NaN', 'limit=1e400']) {
      expectProblem(await app.inject({ url: `/v1/things?${qs}` }), 400, 'HTTP.VALIDATION_FAILED');
    }
    expectProblem(await post('{"title":"x","n":1e999}'), 400, 'HTTP.VALIDATION_FAILED');
  });

  it(`JSON deeper than ${MAX_JSON_DEPTH} levels is refused before parsing; at the limit it parses`, async () => {
    const deep = '{"title":"x","meta":{"a":' + '['.repeat(50_000) + ']'.repeat(50_000) + '}}';
    expectProblem(await post(deep), 400, 'HTTP.BODY_TOO_DEEP');
    const ok = '{"title":"x","meta":{"a":' + '['.repeat(MAX_JSON_DEPTH - 2) + ']'.repeat(MAX_JSON_DEPTH - 2) + '}}';
    expect((await post(ok)).statusCode).toBe(200);
    // brackets inside strings do not count
    expect((await post({ title: '['.repeat(99) })).statusCode).toBe(200);
  });

  it('JSON bodies are never coerced: wrong types are a 400', async () => {
    const cases: Array<[object, string]> = [
      [{ title: 123 }, '/title'],
      [{ title: 'x', labels: 'foo' }, '/labels'],
      [{ title: 'x', archived: 'false' }, '/archived'],
      [{ title: 'x', description: null }, '/description'],
      [{ title: true }, '/title'],
    ];
    for (const [payload, path] of cases) {
      const b = expectProblem(await post(payload), 400, 'HTTP.VALIDATION_FAILED');
      expect(b.errors[0].path).toBe(path);
    }
    // null where the schema allows it
    expect((await post({ title: 'x', note: null })).statusCode).toBe(200);
    // query strings and params are text on the wire: coerced as before
    const q = await app.inject({ url: '/v1/things?limit=5&archived=false' });
    expect(q.json().query).toEqual({ limit: 5, archived: false });
  });

  it('an empty body with Content-Type: application/json is "no body" on routes that take none', async () => {
    const del = await app.inject({ method: 'DELETE', url: '/v1/things/x', headers: { 'content-type': 'application/json' }, payload: '' });
    expect(del.statusCode).toBe(204);
    // a route that needs a body still says so
    expectProblem(await post(''), 400, 'HTTP.VALIDATION_FAILED');
  });

  it('a response carrying a secret is Cache-Control: no-store; others are not', async () => {
    const res = await app.inject({ method: 'POST', url: '/v1/secret' });
    expect(res.headers['cache-control']).toBe('no-store');
    expect((await app.inject({ url: '/v1/plain' })).headers['cache-control']).toBeUndefined();
  });

  it('router errors are problem+json with a request id and security headers', async () => {
    const bad = expectProblem(await app.inject({ url: '/v1/things/%E0%A4%A' }), 400, 'HTTP.BAD_URL');
    expect(bad.requestId).toBeTruthy();
    const long = await app.inject({ url: `/v1/things/${'a'.repeat(MAX_PARAM_LENGTH + 1)}`, headers: { 'x-request-id': 'long-param-1' } });
    expectProblem(long, 414, 'HTTP.PARAM_TOO_LONG');
    expect(long.headers['x-request-id']).toBe('long-param-1');
  });

  it('oversized headers (refused by the HTTP parser itself) are a 431 problem+json with a request id', async () => {
    await app.listen({ port: 0, host: '127.0.0.1' });
    const { port } = app.server.address() as AddressInfo;
    const raw = await new Promise<string>((resolve, reject) => {
      const socket = net.connect(port, '127.0.0.1', () => {
        socket.write(`GET /v1/plain HTTP/1.1\r\nHost: x\r\nX-Big: ${'a'.repeat(20_000)}\r\n\r\n`);
      });
      let data = '';
      socket.on('data', (d) => (data += d.toString()));
      socket.on('end', () => resolve(data));
      socket.on('error', reject);
    });
    expect(raw).toMatch(/^HTTP\/1\.1 431 /);
    expect(raw).toMatch(/content-type: application\/problem\+json/i);
    expect(raw).toMatch(/x-request-id: [0-9a-f-]{36}/i);
    expect(raw).toMatch(/x-content-type-options: nosniff/i);
    const body = JSON.parse(raw.slice(raw.indexOf('\r\n\r\n') + 4));
    expect(body).toMatchObject({ status: 431, code: 'HTTP.HEADERS_TOO_LARGE' });
  });
});

describe('findHostileValue', () => {
  it('names the first hostile value by its JSON pointer (RFC 6901 escapes), deep in arrays and objects', () => {
    const ok = { events: Array.from({ length: 50 }, (_, i) => ({ key: `k${i}`, value: i, on: true, none: null, properties: { 'a/b': 'x', 'c~d': ['é', '😀'] } })) };
    expect(findHostileValue(ok)).toBeNull();
    const bad = structuredClone(ok) as typeof ok;
    (bad.events[7]!.properties['c~d'] as string[])[1] = 'lone \uD800';
    expect(findHostileValue(bad)).toEqual({ path: '/events/7/properties/c~0d/1', message: 'must not contain an unpaired UTF-16 surrogate' });
    bad.events[7]!.properties['a/b'] = 'nul \u0000';
    expect(findHostileValue(bad)?.path).toMatch(/^\/events\/7\/properties\/(a~1b|c~0d\/1)$/);
    expect(findHostileValue({ n: [1, Number.NaN] })).toEqual({ path: '/n/1', message: 'must be a finite number' });
    expect(findHostileValue({ deep: { ['k\u0000']: 1 } })).toEqual({ path: '/deep', message: 'has a property name that must not contain the NUL character (U+0000)' });
    expect(findHostileValue('\u0000')).toEqual({ path: '/', message: 'must not contain the NUL character (U+0000)' });
  });

  it('passes paired surrogates and refuses lone ones at either end', () => {
    expect(stringProblem('ok 😀 é')).toBeNull();
    expect(stringProblem('\uDC00x')).toMatch(/surrogate/);
    expect(stringProblem('x\uD83D')).toMatch(/surrogate/);
  });
});
