import fs from 'node:fs';
import http from 'node:http';
import { createRequire } from 'node:module';
import { createSeriesRecorder, percentiles, round, type SecondSample } from './stats.ts';

const require = createRequire(import.meta.url);
// autocannon ships no types; the surface used here is small and documented in its README.
const autocannon = require('autocannon') as (opts: Record<string, unknown>) => any;

export interface LoadRequest {
  method?: 'GET' | 'POST' | 'PATCH' | 'DELETE';
  /** Path on the target; a function picks one per request (e.g. a random id). */
  path: string | (() => string);
  headers?: Record<string, string> | (() => Record<string, string>);
  body?: unknown | (() => unknown);
}

export interface LoadOptions {
  baseUrl: string;
  request: LoadRequest;
  durationSec: number;
  connections: number;
  /** Requests per second over all connections; unset = as fast as possible (closed loop). */
  rate?: number;
  /**
   * How `rate` is offered. 'per-second' (default): autocannon's — each connection sends its share of a
   * second back to back when the second starts, so every second begins with a burst of `connections`
   * requests. 'uniform': one request every 1/rate s whatever the answers (open loop), latency counted from
   * the moment a request was due (a request waiting for a free connection is waiting on the server), so a
   * slow server cannot lower the offered rate and hide its queue (coordinated omission).
   */
  pacing?: 'per-second' | 'uniform';
  /** Shared recorder so several phases (steady → burst → steady) form one timeline. */
  recorder?: ReturnType<typeof createSeriesRecorder>;
  timeoutSec?: number;
  /** The server's process id (Linux): its CPU time over the run is reported per request. */
  serverPid?: number;
  /**
   * 'uniform' only: offer the rate for this long first, unrecorded (connections opened, the server's first
   * requests on them), then measure `durationSec`. Comparing two phases, each would otherwise carry its own
   * start-up second.
   */
  warmupSec?: number;
  /** 'uniform' only: called when the measured part begins (after the warm-up), e.g. to start what the phase measures. */
  onMeasuring?: () => void;
}

export interface LoadResult {
  durationSec: number;
  requests: number;
  /** 2xx responses per second: the throughput figure compared against baselines. */
  okPerSec: number;
  statuses: Record<string, number>;
  latencyMs: { p50: number; p95: number; p99: number; max: number; mean: number };
  /** Latency of 2xx responses only ("admitted" requests in a burst). */
  okLatencyMs: { p50: number; p95: number; p99: number; max: number; mean: number };
  errors: number;
  timeouts: number;
  /** 429/503 answers that lacked Retry-After (a P5 failure). */
  rejectedWithoutRetryAfter: number;
  /** Statuses that are neither 2xx nor 429/503 (client-visible errors). */
  unexpected: number;
  series: SecondSample[];
  /**
   * The server process's CPU time (user + system) per answered request, µs, when its pid was given: on a
   * shared, busy machine the cost of a request moves much less with the load than its throughput does.
   */
  serverCpuUsPerRequest?: number;
}

/** A process's CPU time so far (user + system), µs; undefined where /proc is not available. */
export function processCpuUs(pid: number): number | undefined {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    // utime and stime are fields 14 and 15 of the full line (11 and 12 after the command), in clock ticks (100/s).
    return (Number(fields[11]) + Number(fields[12])) * 10_000;
  } catch {
    return undefined;
  }
}

function assertLoopback(baseUrl: string): void {
  const host = new URL(baseUrl).hostname;
  if (host !== '127.0.0.1' && host !== 'localhost' && host !== '[::1]') {
    throw new Error(`bench targets loopback only (got ${host})`);
  }
}

/**
 * What a load run keeps of every response (latency, status, the per-second series) and the LoadResult it
 * makes of them at the end, with the server's CPU time over the run: one tally for both load generators.
 */
function createTally(opts: LoadOptions) {
  const startedAt = Date.now();
  const cpuBefore = opts.serverPid ? processCpuUs(opts.serverPid) : undefined;
  const recorder = opts.recorder ?? createSeriesRecorder(startedAt);
  const all: number[] = [];
  const okLat: number[] = [];
  const statuses: Record<string, number> = {};
  let rejectedWithoutRetryAfter = 0;
  let unexpected = 0;
  return {
    response(ms: number, status: number): void {
      recorder.record(Date.now(), ms, status);
      all.push(ms);
      statuses[status] = (statuses[status] ?? 0) + 1;
      if (status >= 200 && status < 300) okLat.push(ms);
      else if (status !== 429 && status !== 503) unexpected += 1;
    },
    /** A 429/503 that came without Retry-After. */
    missingRetryAfter(): void {
      rejectedWithoutRetryAfter += 1;
    },
    finish(errors: number, timeouts: number): LoadResult {
      const elapsed = (Date.now() - startedAt) / 1000;
      const rounded = (p: ReturnType<typeof percentiles>) => ({ p50: round(p.p50), p95: round(p.p95), p99: round(p.p99), max: round(p.max), mean: round(p.mean) });
      const cpuAfter = opts.serverPid ? processCpuUs(opts.serverPid) : undefined;
      return {
        serverCpuUsPerRequest: cpuBefore !== undefined && cpuAfter !== undefined && all.length > 0 ? round((cpuAfter - cpuBefore) / all.length) : undefined,
        durationSec: round(elapsed),
        requests: all.length,
        okPerSec: round(okLat.length / Math.max(elapsed, 0.001), 1),
        statuses,
        latencyMs: rounded(percentiles(all)),
        okLatencyMs: rounded(percentiles(okLat)),
        errors,
        timeouts,
        rejectedWithoutRetryAfter,
        unexpected,
        series: recorder.series(),
      };
    },
  };
}

/** One request's path, headers (content-type for a body) and JSON body, from a LoadRequest's values or functions. */
function resolveRequest(req: LoadRequest): { path: string; headers: Record<string, string>; body: string | undefined } {
  const b = typeof req.body === 'function' ? (req.body as () => unknown)() : req.body;
  return {
    path: typeof req.path === 'function' ? req.path() : req.path,
    headers: { ...(req.body !== undefined ? { 'content-type': 'application/json' } : {}), ...(typeof req.headers === 'function' ? req.headers() : (req.headers ?? {})) },
    body: b === undefined ? undefined : JSON.stringify(b),
  };
}

/** Bounded load against one endpoint with autocannon; every response's latency and status is kept. */
export async function runLoad(opts: LoadOptions): Promise<LoadResult> {
  assertLoopback(opts.baseUrl);
  if (opts.rate && opts.pacing === 'uniform') return runUniform(opts as LoadOptions & { rate: number });
  const tally = createTally(opts);
  const req = opts.request;
  const dynamic = typeof req.path === 'function' || typeof req.headers === 'function' || typeof req.body === 'function';
  const first = resolveRequest(req);

  const instance = autocannon({
    url: opts.baseUrl,
    connections: opts.connections,
    duration: opts.durationSec,
    timeout: opts.timeoutSec ?? 10,
    ...(opts.rate ? { overallRate: opts.rate } : {}),
    requests: [
      {
        method: req.method ?? 'GET',
        ...first,
        ...(dynamic ? { setupRequest: (r: Record<string, unknown>) => Object.assign(r, resolveRequest(req)) } : {}),
        onResponse: (status: number, _body: string, _ctx: unknown, headers: Record<string, string>) => {
          if ((status === 429 || status === 503) && !headers['retry-after'] && !headers['Retry-After']) tally.missingRetryAfter();
        },
      },
    ],
  });
  instance.on('response', (_client: unknown, statusCode: number, _bytes: number, responseTime: number) => tally.response(responseTime, statusCode));
  const result = await instance;
  return tally.finish(Number(result.errors ?? 0), Number(result.timeouts ?? 0));
}

/**
 * Open-loop load at a uniform rate (LoadOptions.pacing 'uniform'): request i is due at start + i/rate and
 * sent then on a free keep-alive connection (at most `connections`, queued in the agent when all are busy);
 * its latency runs from when it was due to its last byte. Node's HTTP client, not autocannon: autocannon
 * paces per connection and per second (bursts), and its client cannot be driven by a clock.
 */
async function runUniform(opts: LoadOptions & { rate: number }): Promise<LoadResult> {
  const agent = new http.Agent({ keepAlive: true, maxSockets: opts.connections });
  const base = new URL(opts.baseUrl);
  let errors = 0;
  let timeouts = 0;
  const warmup = Math.round(opts.rate * (opts.warmupSec ?? 0));
  const total = warmup + Math.round(opts.rate * opts.durationSec);
  const intervalMs = 1000 / opts.rate;
  const t0 = performance.now();
  // Created when the measured part begins: its clock (duration, per-second series, the server's CPU) starts there.
  let tally = warmup === 0 ? createTally(opts) : undefined;
  const measuredFrom = t0 + warmup * intervalMs;
  const inFlight = new Set<Promise<void>>();
  const send = (due: number) =>
    new Promise<void>((resolve) => {
      const { path, headers, body } = resolveRequest(opts.request);
      const r = http.request(
        {
          agent, host: base.hostname, port: base.port, method: opts.request.method ?? 'GET', path,
          headers: { ...headers, ...(body !== undefined ? { 'content-length': String(Buffer.byteLength(body)) } : {}) },
          timeout: (opts.timeoutSec ?? 10) * 1000,
        },
        (res) => {
          res.on('data', () => {});
          res.on('end', () => {
            const status = res.statusCode ?? 0;
            if (due >= measuredFrom) {
              tally!.response(performance.now() - due, status);
              if ((status === 429 || status === 503) && !res.headers['retry-after']) tally!.missingRetryAfter();
            }
            resolve();
          });
        },
      );
      r.on('timeout', () => {
        if (due >= measuredFrom) timeouts += 1;
        r.destroy(new Error('timeout'));
      });
      r.on('error', () => {
        if (due >= measuredFrom) errors += 1;
        resolve();
      });
      r.end(body);
    });
  for (let i = 0; i < total; i++) {
    const due = t0 + i * intervalMs;
    const wait = due - performance.now();
    if (wait > 1) await new Promise((r) => setTimeout(r, wait));
    if (i === warmup) {
      tally ??= createTally(opts);
      opts.onMeasuring?.();
    }
    const p = send(due).finally(() => inFlight.delete(p));
    inFlight.add(p);
  }
  await Promise.all(inFlight);
  agent.destroy();
  return tally!.finish(errors, timeouts);
}
