import { pino } from 'pino';
import { describe, expect, it } from 'vitest';
import { loadConfig } from '../config.ts';
import { scrape } from '../observability/metrics.ts';
import { createConcurrencyLimiter, type Permit } from './concurrency-limit.ts';
import { registerHealthRoutes } from './health.ts';
import { createHttpServer } from './server.ts';

/** A limiter on a hand-driven clock. */
function rig(opts: { initialLimit?: number; minLimit?: number; maxLimit?: number } = {}) {
  let t = 0;
  const limiter = createConcurrencyLimiter({ initialLimit: opts.initialLimit ?? 20, minLimit: opts.minLimit ?? 2, maxLimit: opts.maxLimit ?? 200, now: () => t });
  return {
    limiter,
    advance: (ms: number) => void (t += ms),
    /** One window: `concurrent` requests (capped by the limit) that each take `rttMs`; returns how many were shed. */
    window(concurrent: number, rttMs: number): number {
      let shed = 0;
      for (let round = 0; round < 10; round++) {
        const permits: Permit[] = [];
        for (let i = 0; i < concurrent; i++) {
          const p = limiter.acquire();
          if (p) permits.push(p);
          else shed++;
        }
        t += rttMs;
        for (const p of permits) p.success();
        t += 10;
      }
      return shed;
    },
  };
}

describe('adaptive concurrency limiter (deterministic clock)', () => {
  it('never sheds before the first completed request, then holds in-flight at the limit', () => {
    const { limiter, advance } = rig({ initialLimit: 5 });
    const early = Array.from({ length: 50 }, () => limiter.acquire());
    expect(early.every(Boolean)).toBe(true); // nothing measured yet: nothing refused
    expect(limiter.inFlight()).toBe(50);
    advance(5);
    for (const p of early) p!.success();
    expect(limiter.inFlight()).toBe(0);
    const admitted = Array.from({ length: 5 }, () => limiter.acquire());
    expect(admitted.every(Boolean)).toBe(true);
    expect(limiter.acquire()).toBeUndefined();
    expect(limiter.shed()).toBe(1);
    // A client that went away frees its slot without counting as a latency sample.
    admitted[0]!.ignore();
    admitted[0]!.ignore(); // idempotent
    expect(limiter.inFlight()).toBe(4);
    expect(limiter.acquire()).toBeDefined();
  });

  it('grows while latency stays flat under load, not while the process is app-limited', () => {
    const { limiter, window } = rig({ initialLimit: 20 });
    for (let i = 0; i < 20; i++) window(3, 10); // 3 in flight of 20: app-limited
    expect(limiter.limit()).toBe(20);
    let previous = limiter.limit();
    for (let i = 0; i < 30; i++) {
      window(limiter.limit(), 10); // saturated, same latency: room to grow
      expect(limiter.limit()).toBeGreaterThanOrEqual(previous);
      previous = limiter.limit();
    }
    expect(limiter.limit()).toBeGreaterThan(40);
    expect(limiter.limit()).toBeLessThanOrEqual(200);
  });

  it('shrinks quickly when queueing makes requests slower, sheds the excess, and recovers afterwards', () => {
    const { limiter, window } = rig({ initialLimit: 50, minLimit: 4 });
    for (let i = 0; i < 20; i++) window(50, 10); // baseline: 10 ms
    const before = limiter.limit();
    // Overload: latency grows with what is admitted (a saturated resource), 300 callers at once.
    let shed = 0;
    for (let i = 0; i < 15; i++) shed += window(300, limiter.limit() * 1);
    expect(shed).toBeGreaterThan(0);
    expect(limiter.limit()).toBeLessThan(before / 2);
    expect(limiter.limit()).toBeGreaterThanOrEqual(4);
    const { short, long } = limiter.latency();
    expect(short).toBeLessThan(3 * long!); // admitted latency pulled back near the baseline
    // The burst ends: latency is back at 10 ms and the limit climbs again.
    const low = limiter.limit();
    for (let i = 0; i < 40; i++) window(limiter.limit(), 10);
    expect(limiter.limit()).toBeGreaterThan(low);
  });

  it('refuses impossible bounds', () => {
    expect(() => createConcurrencyLimiter({ initialLimit: 1, minLimit: 5, maxLimit: 10 })).toThrow(/min ≤ initial ≤ max/);
  });
});

describe('adaptive concurrency limit over HTTP', () => {
  it('fresh app: first requests are not shed; a burst against a slow route gets fast 503 + Retry-After while admitted latency stays bounded', async () => {
    const lifecycle = { draining: false, closing: false };
    const config = loadConfig({ NODE_ENV: 'test', CONCURRENCY_LIMIT_ENABLED: 'true', CONCURRENCY_LIMIT_INITIAL: '8', CONCURRENCY_LIMIT_MIN: '2' });
    const app = await createHttpServer({ config, logger: pino({ level: 'silent' }), lifecycle });
    registerHealthRoutes(app, { lifecycle, checks: {} });
    // A resource with 4 slots of 20 ms (a small pool): latency grows with the number of requests waiting.
    let busy = 0;
    let peakQueued = 0;
    const waiting: Array<() => void> = [];
    app.get('/slow', { config: { public: true } }, async () => {
      if (busy >= 4) {
        peakQueued = Math.max(peakQueued, waiting.length + 1);
        await new Promise<void>((r) => waiting.push(r));
      } else busy++;
      await new Promise((r) => setTimeout(r, 20));
      const next = waiting.shift();
      if (next) next();
      else busy--;
      return { ok: true };
    });
    // Server-side time from admission to response, by status (the client shares this busy event loop).
    const served: Record<number, number[]> = {};
    app.addHook('onResponse', async (request, reply) => {
      if (request.url === '/slow') (served[reply.statusCode] ??= []).push(reply.elapsedTime);
    });
    await app.listen({ port: 0, host: '127.0.0.1' });
    const base = `http://127.0.0.1:${(app.server.address() as { port: number }).port}`;
    const timed = async (path: string) => {
      const t0 = performance.now();
      const res = await fetch(`${base}${path}`);
      const body = await res.text();
      return {
        status: res.status, ms: performance.now() - t0, retryAfter: res.headers.get('retry-after'), type: res.headers.get('content-type'), body,
        requestId: res.headers.get('x-request-id'), csp: res.headers.get('content-security-policy'),
      };
    };
    try {
      // Fresh process, nothing measured: a first burst above the initial limit is served, not refused.
      const first = await Promise.all(Array.from({ length: 12 }, () => timed('/slow')));
      expect(first.map((r) => r.status)).toEqual(first.map(() => 200));

      // Steady traffic at 4 concurrent sets the baseline.
      for (let i = 0; i < 10; i++) await Promise.all(Array.from({ length: 4 }, () => timed('/slow')));

      // Burst: 200 at once. Unlimited, up to 196 would queue for the 4 slots and the last would wait ~1 s.
      peakQueued = 0;
      const [burst, live] = await Promise.all([Promise.all(Array.from({ length: 200 }, () => timed('/slow'))), timed('/livez')]);
      expect(live.status).toBe(200); // probes are exempt
      const ok = burst.filter((r) => r.status === 200);
      const shed = burst.filter((r) => r.status !== 200);
      expect(ok.length).toBeGreaterThan(0);
      expect(shed.length).toBeGreaterThan(0);
      for (const r of shed) {
        expect(r.status).toBe(503);
        expect(r.retryAfter).toBe('1');
        expect(r.type).toMatch(/application\/problem\+json/);
        const problem = JSON.parse(r.body);
        expect(problem).toMatchObject({ code: 'HTTP.OVERLOADED', status: 503, title: 'Service Unavailable' });
        expect(problem.requestId).toBe(r.requestId);
        expect(r.csp).toContain("default-src 'none'");
      }
      // Admitted requests wait behind a few slots' worth, not behind the burst: the queue in front of the
      // resource stays at the limit's size (which is what bounds their latency)...
      expect(peakQueued).toBeLessThanOrEqual(30);
      // ...and refusals are immediate. (Time bounds are loose: this machine may be shared and busy.)
      const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
      // Refused in the server's request listener: none of them reached Fastify (no hook, no handler ran).
      expect(served[503]).toBeUndefined();
      expect(median(served[200]!.slice(-ok.length))).toBeLessThan(300);
      const metrics = await scrape();
      expect(metrics).toMatch(/^plinth_http_concurrency_limit \d+/m);
      expect(metrics).toMatch(/^plinth_http_concurrency_limit_in_flight \d+/m);
      expect(Number(/^plinth_http_requests_shed_total (\d+)/m.exec(metrics)?.[1])).toBeGreaterThanOrEqual(shed.length);
    } finally {
      lifecycle.draining = true;
      await fetch(`${base}/livez`).catch(() => undefined);
      await app.close();
    }
  });
});
