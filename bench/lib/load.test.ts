import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runLoad } from './load.ts';

/** A server that answers after `delayMs`, recording when each request arrived. */
let server: http.Server;
let baseUrl: string;
const arrivals: number[] = [];
const delayMs = 40;

beforeAll(async () => {
  server = http.createServer((req, res) => {
    arrivals.push(performance.now());
    req.resume();
    req.on('end', () => setTimeout(() => res.end('{}'), delayMs));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  baseUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});
afterAll(() => new Promise<void>((r) => server.close(() => r())));

describe('runLoad, uniform pacing', () => {
  it('offers one request every 1/rate s whatever the answers, and counts latency from when each was due', async () => {
    arrivals.length = 0;
    // 100/s for 1 s against 40 ms answers: 4 in flight on average, 8 connections are enough.
    const r = await runLoad({ baseUrl, request: { method: 'POST', path: '/x', body: () => ({ n: 1 }) }, durationSec: 1, connections: 8, rate: 100, pacing: 'uniform' });
    expect(r.requests).toBe(100);
    expect(r.statuses['200']).toBe(100);
    expect(r.okLatencyMs.p50).toBeGreaterThanOrEqual(delayMs);
    // Evenly spread, not a burst per second: each fifth of the second gets about a fifth of the requests
    // (autocannon's rate mode sends nearly all of them in the first). Loose bounds: a loaded test machine
    // delays timers, and the pacer then sends what fell due back to back.
    const fifths = [0, 0, 0, 0, 0];
    for (const t of arrivals) fifths[Math.min(4, Math.floor((t - arrivals[0]!) / 200))]!++;
    for (const n of fifths) {
      expect(n).toBeGreaterThanOrEqual(8);
      expect(n).toBeLessThanOrEqual(35);
    }
  });

  it('a warm-up is offered at the rate but not recorded; the measured part starts with onMeasuring', async () => {
    arrivals.length = 0;
    const t0 = performance.now();
    let measuringAt = 0;
    const r = await runLoad({
      baseUrl, request: { path: '/w' }, durationSec: 0.5, connections: 8, rate: 100, pacing: 'uniform', warmupSec: 0.5,
      onMeasuring: () => {
        measuringAt = performance.now() - t0;
      },
    });
    expect(arrivals).toHaveLength(100); // 50 warm-up + 50 measured reached the server
    expect(r.requests).toBe(50);
    expect(r.statuses['200']).toBe(50);
    expect(measuringAt).toBeGreaterThanOrEqual(450);
    expect(r.durationSec).toBeLessThan(0.9); // the measured part's clock, not the warm-up's
  });

  it('a server slower than the rate builds a queue the latencies show (no coordinated omission)', async () => {
    // 2 connections at 40 ms each carry 50/s; 100/s offered: requests wait for a connection, and that counts.
    const r = await runLoad({ baseUrl, request: { path: '/y' }, durationSec: 1, connections: 2, rate: 100, pacing: 'uniform' });
    expect(r.requests).toBe(100);
    expect(r.okLatencyMs.p99).toBeGreaterThan(500);
  });
});
