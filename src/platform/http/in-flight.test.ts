import http from 'node:http';
import { pino } from 'pino';
import { describe, expect, it } from 'vitest';
import { loadConfig } from '../config.ts';
import { registerHealthRoutes } from './health.ts';
import { registerInFlightLimit } from './in-flight.ts';
import { createHttpServer } from './server.ts';

describe('in-flight admission control (MAX_IN_FLIGHT)', () => {
  it('answers 503 + Retry-After beyond the cap, frees slots as responses finish or clients leave, never blocks probes', async () => {
    const lifecycle = { draining: false, closing: false };
    const app = await createHttpServer({ config: loadConfig({ NODE_ENV: 'test' }), logger: pino({ level: 'silent' }), lifecycle });
    const limiter = registerInFlightLimit(app, { max: 2, retryAfterSec: 1 });
    registerHealthRoutes(app, { lifecycle, checks: {} });
    app.get('/slow', { config: { public: true } }, async () => {
      await new Promise((r) => setTimeout(r, 400));
      return { ok: true };
    });
    await app.listen({ port: 0, host: '127.0.0.1' });
    const base = `http://127.0.0.1:${(app.server.address() as { port: number }).port}`;
    try {
      const first = [fetch(`${base}/slow`), fetch(`${base}/slow`)];
      await new Promise((r) => setTimeout(r, 100));
      expect(limiter.inFlight()).toBe(2);
      const shed = await fetch(`${base}/slow`);
      expect(shed.status).toBe(503);
      expect(shed.headers.get('retry-after')).toBe('1');
      expect(shed.headers.get('content-type')).toMatch(/application\/problem\+json/);
      expect((await shed.json()).code).toBe('HTTP.OVERLOADED');
      expect((await fetch(`${base}/livez`)).status).toBe(200);
      expect((await fetch(`${base}/readyz`)).status).toBe(200);
      for (const res of await Promise.all(first)) expect(res.status).toBe(200);

      // A client that goes away frees its slot too.
      const gone = http.get(`${base}/slow`, { agent: false });
      const closed = new Promise((r) => gone.on('close', r));
      gone.on('error', () => undefined);
      await new Promise((r) => setTimeout(r, 50));
      gone.destroy();
      await closed;
      // The handler is still sleeping (400 ms); the slot must be free already.
      await new Promise((r) => setTimeout(r, 50));
      expect(limiter.inFlight()).toBe(0);
      await new Promise((r) => setTimeout(r, 400));
      expect((await fetch(`${base}/slow`)).status).toBe(200);
    } finally {
      // As in a real shutdown: draining makes kept-alive client connections close after their response.
      lifecycle.draining = true;
      await fetch(`${base}/livez`).catch(() => undefined);
      await app.close();
    }
  });

  it('is off by default (0) and configured by MAX_IN_FLIGHT', async () => {
    expect(loadConfig({}).edge.maxInFlight).toBe(0);
    expect(loadConfig({ MAX_IN_FLIGHT: '64' }).edge.maxInFlight).toBe(64);
    expect(() => loadConfig({ MAX_IN_FLIGHT: '-1' })).toThrow(/MAX_IN_FLIGHT/);
  });
});
