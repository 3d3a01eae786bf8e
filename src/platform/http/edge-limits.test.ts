import net from 'node:net';
import type { AddressInfo } from 'node:net';
import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createEdgeTestApp, createWidgetTable, type WidgetControls } from '../../../test/helpers/edge-fixtures.ts';
import { createTestPlatform, type TestPlatform } from '../../../test/helpers/test-platform.ts';
import { newId } from '../ids.ts';
import { MAX_PAGE_SIZE } from './pagination.ts';
import type { App } from './server.ts';

function blockEventLoop(ms: number) {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    // busy: simulates CPU-bound work starving the loop
  }
}

describe('backpressure, body/request limits, page size, OpenAPI', () => {
  let t: TestPlatform;
  let app: App;
  const controls: WidgetControls = { failNext: 0, handlerCalls: 0 };
  const auth = { authorization: 'Bearer alice' };

  beforeAll(async () => {
    t = await createTestPlatform({
      env: { PRESSURE_MAX_EVENT_LOOP_DELAY_MS: '100', PRESSURE_RETRY_AFTER_SEC: '3', BODY_LIMIT_BYTES: '2048', REQUEST_TIMEOUT_MS: '500' },
    });
    await createWidgetTable(t.db.owner);
    app = await createEdgeTestApp(t, controls);
  });
  afterAll(async () => {
    await app?.close();
    await t?.close();
  });

  it('answers 503 problem+json with Retry-After while the event loop is starved, keeps /livez up, and recovers', async () => {
    const orgId = newId();
    let shed: Awaited<ReturnType<App['inject']>> | undefined;
    let live: Awaited<ReturnType<App['inject']>> | undefined;
    // Nothing is shed before the first real event-loop sample (a fresh process): let one be taken.
    await new Promise((r) => setTimeout(r, 400));
    for (let i = 0; i < 20 && !shed; i++) {
      blockEventLoop(300);
      await new Promise((r) => setTimeout(r, 1));
      if (app.memoryUsage().eventLoopDelay > 100) {
        [shed, live] = await Promise.all([
          app.inject({ url: `/v1/orgs/${orgId}/widgets`, headers: auth }),
          app.inject({ url: '/livez' }),
        ]);
      }
    }
    expect(shed?.statusCode).toBe(503);
    expect(shed!.headers['content-type']).toMatch(/^application\/problem\+json/);
    expect(shed!.headers['retry-after']).toBe('3');
    expect(shed!.json()).toMatchObject({ code: 'HTTP.OVERLOADED', status: 503, requestId: shed!.headers['x-request-id'] });
    expect(live!.statusCode).toBe(200);
    // Once the loop is idle again the next samples clear the pressure.
    let status = 0;
    for (let i = 0; i < 50 && status !== 200; i++) {
      await new Promise((r) => setTimeout(r, 100));
      status = (await app.inject({ url: `/v1/orgs/${orgId}/widgets`, headers: auth })).statusCode;
    }
    expect(status).toBe(200);
  });

  it('rejects a body over BODY_LIMIT_BYTES with 413 before any handler or idempotency claim', async () => {
    const calls = controls.handlerCalls;
    const res = await app.inject({
      method: 'POST',
      url: `/v1/orgs/${newId()}/widgets`,
      headers: { ...auth, 'idempotency-key': 'too-big' },
      payload: { name: 'x'.repeat(3000) },
    });
    expect(res.statusCode).toBe(413);
    expect(res.json().code).toBe('HTTP.BODY_TOO_LARGE');
    expect(controls.handlerCalls).toBe(calls);
    const { rows } = await sql<{ n: number }>`select count(*)::int as n from idempotency_keys`.execute(t.db.app);
    expect(rows[0]!.n).toBe(0);
  });

  it('closes a connection that does not finish its request within REQUEST_TIMEOUT_MS (slowloris)', async () => {
    const server = await createEdgeTestApp(t, controls);
    await server.listen({ port: 0, host: '127.0.0.1' });
    try {
      const { port } = server.server.address() as AddressInfo;
      const started = Date.now();
      const answer = await new Promise<string>((resolve, reject) => {
        // A trickle of header bytes every 150 ms: never idle long enough for the socket timeout, never done.
        const socket = net.connect(port, '127.0.0.1', () => socket.write('POST /v1/public/echo HTTP/1.1\r\nHost: x\r\n'));
        const trickle = setInterval(() => socket.writable && socket.write('X-Slow: 1\r\n'), 150);
        let data = '';
        socket.on('data', (c) => (data += c.toString()));
        socket.on('close', () => {
          clearInterval(trickle);
          resolve(data);
        });
        socket.on('error', reject);
        setTimeout(() => reject(new Error('socket still open after 5 s')), 5_000).unref();
      });
      expect(answer).toMatch(/^HTTP\/1\.1 408/);
      expect(Date.now() - started).toBeLessThan(2_500);
    } finally {
      await server.close();
    }
  });

  it(`caps list pages at MAX_PAGE_SIZE (${MAX_PAGE_SIZE})`, async () => {
    const orgId = newId();
    expect((await app.inject({ url: `/v1/orgs/${orgId}/widgets?limit=${MAX_PAGE_SIZE}`, headers: auth })).statusCode).toBe(200);
    const tooMany = await app.inject({ url: `/v1/orgs/${orgId}/widgets?limit=${MAX_PAGE_SIZE + 1}`, headers: auth });
    expect(tooMany.statusCode).toBe(400);
    expect(tooMany.json().code).toBe('HTTP.VALIDATION_FAILED');
  });

  it('documents Idempotency-Key, 409/422 on POST and 429/503 on every /v1 route in OpenAPI', async () => {
    const spec = (await app.inject({ url: '/openapi.json' })).json();
    const post = spec.paths['/v1/orgs/{orgId}/widgets'].post;
    const header = post.parameters.find((p: { in: string; name: string }) => p.in === 'header' && p.name === 'idempotency-key');
    expect(header?.description).toMatch(/replayed for 24 h/);
    expect(header.required).toBeFalsy();
    expect(Object.keys(post.responses)).toEqual(expect.arrayContaining(['201', '409', '422', '429', '503']));
    const get = spec.paths['/v1/orgs/{orgId}/widgets'].get;
    expect(Object.keys(get.responses)).toEqual(expect.arrayContaining(['200', '429', '503']));
    expect(Object.keys(get.responses)).not.toContain('409');
    expect(get.responses['429'].description).toMatch(/RateLimit-Policy/);
  });
});
