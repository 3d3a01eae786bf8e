import type { IncomingMessage, ServerResponse } from 'node:http';
import { httpRequestsShed, registerConcurrencyLimitMetrics } from '../observability/metrics.ts';
import { buildProblem } from './errors.ts';

/**
 * Adaptive concurrency limit (a gradient limiter after Netflix's concurrency-limits "Gradient2"): how many
 * requests one process serves at once, found from the latency it measures instead of a fixed threshold.
 *
 * Every window (≥ `windowMs` and ≥ `windowMinSamples` completed requests) the window's mean latency (short)
 * is compared with a slow moving average of past windows (long):
 *   gradient = clamp(tolerance · long / short, 0.5, 1)
 *   limit    = (1 − smoothing) · limit + smoothing · (limit · gradient + √limit)
 * so the limit shrinks while queueing makes requests slower than usual and grows by about √limit while
 * they are not. It does not grow while the process is app-limited (under half the limit in flight: more
 * room would prove nothing). When the load goes away, the long average decays toward the short one, so a
 * burst does not leave a high baseline behind. Over the limit, a request is refused at once (503 +
 * Retry-After) instead of waiting behind the others — the queue the caller would otherwise sit in.
 *
 * No request is refused before the first one has completed: with no measurement there is nothing to act on
 * (a fresh process answers its first burst, then limits from what it measured).
 */
export interface ConcurrencyLimiterOptions {
  initialLimit: number;
  minLimit: number;
  maxLimit: number;
  /** How much slower than the long average a window may be before the limit shrinks (default 1.5). */
  tolerance?: number;
  /** Weight of a new estimate (default 0.2). */
  smoothing?: number;
  /** Shortest window between two limit updates (default 100 ms). */
  windowMs?: number;
  /** Fewest completed requests in a window (default 10). */
  windowMinSamples?: number;
  /** Windows the long average spans (default 600, i.e. a minute at 100 ms). */
  longWindows?: number;
  /** Milliseconds, monotonic; injectable for tests. */
  now?: () => number;
}

export interface ConcurrencyLimiter {
  /** A permit, or undefined when the limit is reached (shed the request). */
  acquire(): Permit | undefined;
  /** Current limit (whole requests). */
  limit(): number;
  inFlight(): number;
  /** Requests refused since start. */
  shed(): number;
  /** The latest short / long latency averages, ms (undefined before the first window). */
  latency(): { short: number | undefined; long: number | undefined };
}

export interface Permit {
  /** The request finished: its latency is a sample. */
  success(): void;
  /** The request ended without a meaningful latency (client went away): frees the slot only. */
  ignore(): void;
}

export function createConcurrencyLimiter(opts: ConcurrencyLimiterOptions): ConcurrencyLimiter {
  const now = opts.now ?? (() => performance.now());
  const tolerance = opts.tolerance ?? 1.5;
  const smoothing = opts.smoothing ?? 0.2;
  const windowMs = opts.windowMs ?? 100;
  const windowMinSamples = opts.windowMinSamples ?? 10;
  const longFactor = 2 / ((opts.longWindows ?? 600) + 1);
  const WARMUP_WINDOWS = 10;
  if (!(opts.minLimit >= 1 && opts.minLimit <= opts.initialLimit && opts.initialLimit <= opts.maxLimit)) {
    throw new Error('concurrency limit: need 1 ≤ min ≤ initial ≤ max');
  }

  let estimate = opts.initialLimit;
  let inFlight = 0;
  let shed = 0;
  let sampled = false;
  let shortRtt: number | undefined;
  let longRtt: number | undefined;
  let windows = 0;
  // The current window.
  let windowStart = now();
  let sum = 0;
  let count = 0;
  let maxInFlight = 0;

  function update(rtt: number, peakInFlight: number): void {
    shortRtt = rtt;
    windows++;
    // Plain average while warming up, then an exponential moving average over `longWindows` windows.
    longRtt = longRtt === undefined ? rtt : windows <= WARMUP_WINDOWS ? longRtt + (rtt - longRtt) / windows : longRtt + (rtt - longRtt) * longFactor;
    // Load went away (requests much faster than the long average): let the baseline follow quickly.
    if (longRtt / rtt > 2) longRtt *= 0.95;
    // App-limited: less than half the limit was ever in use, so this window says nothing about it.
    if (peakInFlight < estimate / 2) return;
    const gradient = Math.max(0.5, Math.min(1, (tolerance * longRtt) / rtt));
    const next = estimate * gradient + Math.sqrt(estimate);
    estimate = Math.max(opts.minLimit, Math.min(opts.maxLimit, estimate * (1 - smoothing) + next * smoothing));
  }

  function sample(rtt: number, peakInFlight: number): void {
    sampled = true;
    sum += rtt;
    count++;
    if (peakInFlight > maxInFlight) maxInFlight = peakInFlight;
    const t = now();
    if (count < windowMinSamples || t - windowStart < windowMs) return;
    update(sum / count, maxInFlight);
    windowStart = t;
    sum = 0;
    count = 0;
    maxInFlight = 0;
  }

  return {
    acquire() {
      if (sampled && inFlight >= Math.floor(estimate)) {
        shed++;
        return undefined;
      }
      inFlight++;
      const started = now();
      const peak = inFlight;
      let done = false;
      return {
        success() {
          if (done) return;
          done = true;
          inFlight--;
          sample(Math.max(0, now() - started), peak);
        },
        ignore() {
          if (done) return;
          done = true;
          inFlight--;
        },
      };
    },
    limit: () => Math.floor(estimate),
    inFlight: () => inFlight,
    shed: () => shed,
    latency: () => ({ short: shortRtt, long: longRtt }),
  };
}

/** Probes and the scrape must answer even when the process is saturated, or a busy pod would be restarted. */
const EXEMPT = new Set(['/livez', '/readyz', '/metrics']);

export interface ConcurrencyLimitSettings {
  initialLimit: number;
  minLimit: number;
  maxLimit: number;
  retryAfterSec: number;
}

const REQUEST_ID = /^[A-Za-z0-9._:-]{1,128}$/;

/**
 * Admission control by the adaptive limit, in front of Fastify: `admit(req, res)` runs in the HTTP server's
 * request listener (server.ts passes it through Fastify's serverFactory), before routing, request ids,
 * loggers, hooks, body parsing and authentication. A refused request is answered there with a 503 whose
 * headers and body were serialized once at start (only its request id is filled in): when the refusal cost
 * most of what serving a cached read costs (the Fastify path: hooks, serializer, logging, metrics), a burst
 * of refusals took the CPU the admitted requests needed (bench 2026-12-01: admitted p99 688 ms with the
 * limit, 179 ms without). Refused: 503 `HTTP.OVERLOADED` problem+json, `Retry-After`, the security headers,
 * `X-Request-Id`; counted in `plinth_http_requests_shed_total` (not in the request-duration histogram, which
 * measures requests Fastify handled), a summary logged at warn every 10 s. The limit, in-flight count and
 * refusals are metrics. (`app.inject` in tests bypasses the listener, so it is never limited.)
 */
export function createAdmission(
  settings: ConcurrencyLimitSettings,
  opts: { logger: { warn(obj: object, msg: string): void }; headers: Array<[string, string]>; draining: () => boolean; newId: () => string; now?: () => number },
): { limiter: ConcurrencyLimiter; admit(req: IncomingMessage, res: ServerResponse): boolean; close(): void } {
  const limiter = createConcurrencyLimiter({ ...settings, now: opts.now });
  const unregister = registerConcurrencyLimitMetrics(limiter);
  const head = JSON.stringify(buildProblem(503, 'HTTP.OVERLOADED', 'The server is at its concurrency limit; retry after the Retry-After delay', '\u0000'));
  const [before, after] = head.split('"\\u0000"') as [string, string];
  const fixed: string[] = [];
  for (const [k, v] of [['content-type', 'application/problem+json; charset=utf-8'], ['retry-after', String(settings.retryAfterSec)], ...opts.headers]) fixed.push(k!, v!);
  let lastWarn = 0;
  let shedSinceWarn = 0;
  function refuse(req: IncomingMessage, res: ServerResponse): void {
    httpRequestsShed.inc();
    shedSinceWarn++;
    const t = Date.now();
    if (t - lastWarn >= 10_000) {
      opts.logger.warn({ shed: shedSinceWarn, limit: limiter.limit(), inFlight: limiter.inFlight(), latencyMs: limiter.latency() }, 'overloaded: shedding requests');
      lastWarn = t;
      shedSinceWarn = 0;
    }
    const header = req.headers['x-request-id'];
    const id = typeof header === 'string' && REQUEST_ID.test(header) ? header : opts.newId();
    const body = `${before}${JSON.stringify(id)}${after}`;
    const headers = [...fixed, 'x-request-id', id, 'content-length', String(Buffer.byteLength(body))];
    if (opts.draining()) headers.push('connection', 'close');
    res.writeHead(503, headers);
    res.end(body);
  }
  return {
    limiter,
    admit(req, res) {
      const url = req.url ?? '/';
      const q = url.indexOf('?');
      if (EXEMPT.has(q === -1 ? url : url.slice(0, q))) return true;
      const permit = limiter.acquire();
      if (!permit) {
        refuse(req, res);
        return false;
      }
      // 'close' fires once per response, whether it finished or the client went away.
      res.once('close', () => (res.writableFinished ? permit.success() : permit.ignore()));
      return true;
    },
    close: unregister,
  };
}
