/**
 * The deploy drill's client load through HAProxy: writers that create tasks with an Idempotency-Key and
 * retry the same key and body until it is acknowledged, and readers that retry a read a few times. Every
 * attempt is a sample (latency, status, the instance that answered from HAProxy's x-served-by header); a
 * request the client finally gives up on is a final failure (what a user would see), a retried-then-answered
 * one is not.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import type { Tenant } from '../lib/api.ts';
import { sleep } from '../lib/processes.ts';
import { newWriteStats, type WriteStats } from './suite-lib.ts';

export interface Sample {
  /** ms since the epoch when the answer (or the error) came back */
  at: number;
  ms: number;
  ok: boolean;
  status: number;
  /** HAProxy's server name; 'haproxy' when HAProxy answered itself, 'network' when nothing answered */
  server: string;
  kind: 'read' | 'write';
}

export interface FinalFailure {
  at: number;
  kind: 'read' | 'write';
  detail: string;
}

export interface Load {
  samples: Sample[];
  finalFailures: FinalFailure[];
  writes: WriteStats;
  marker: string;
  stop(): Promise<void>;
}

async function attempt(method: 'GET' | 'POST', url: string, token: string, kind: Sample['kind'], samples: Sample[], body?: unknown, key?: string): Promise<{ status: number; id?: string; retryAfter?: number }> {
  const t0 = performance.now();
  try {
    const res = await fetch(url, {
      method,
      headers: {
        authorization: `Bearer ${token}`,
        ...(body !== undefined ? { 'content-type': 'application/json' } : {}),
        ...(key ? { 'idempotency-key': key } : {}),
      },
      body: body === undefined ? undefined : JSON.stringify(body),
      signal: AbortSignal.timeout(10_000),
    });
    const text = await res.text();
    const ok = res.status >= 200 && res.status < 300;
    samples.push({ at: Date.now(), ms: performance.now() - t0, ok, status: res.status, server: res.headers.get('x-served-by') || 'haproxy', kind });
    let id: string | undefined;
    try {
      id = (JSON.parse(text) as { id?: string }).id;
    } catch {
      // not JSON (HAProxy's own error page)
    }
    return { status: res.status, id, retryAfter: Number(res.headers.get('retry-after')) || undefined };
  } catch {
    samples.push({ at: Date.now(), ms: performance.now() - t0, ok: false, status: 0, server: 'network', kind });
    return { status: 0 };
  }
}

export function startLoad(opts: { lbUrl: string; tenant: Tenant; projectId: string; writers: number; readers: number; marker: string }): Load {
  const { lbUrl, tenant, projectId } = opts;
  const samples: Sample[] = [];
  const finalFailures: FinalFailure[] = [];
  const writes = newWriteStats();
  let running = true;
  const tasksUrl = `${lbUrl}/v1/orgs/${tenant.orgId}/projects/${projectId}/tasks`;

  const writer = async (w: number) => {
    let n = 0;
    while (running) {
      const key = randomUUID();
      const marker = `${opts.marker}-${w}-${randomBytes(3).toString('hex')}-${n++}`;
      const giveUpAt = Date.now() + 30_000;
      let acked = false;
      // The key in hand is finished even after stop(): a client does not abandon a write half-way.
      while (!acked) {
        const a = await attempt('POST', tasksUrl, tenant.token, 'write', samples, { title: marker }, key);
        writes.attempts++;
        const kind = a.status === 0 ? 'network' : String(a.status);
        writes.byOutcome[kind] = (writes.byOutcome[kind] ?? 0) + 1;
        if (a.status >= 200 && a.status < 300 && a.id) {
          writes.acks.push({ key, marker, id: a.id });
          acked = true;
        } else if (Date.now() > giveUpAt) {
          writes.gaveUp++;
          finalFailures.push({ at: Date.now(), kind: 'write', detail: `key ${key}: last answer ${kind}` });
          break;
        } else {
          await sleep(a.retryAfter ? Math.min(1_000, a.retryAfter * 1_000) : a.status === 409 ? 100 : 200);
        }
      }
      await sleep(100);
    }
  };

  const reader = async (r: number) => {
    let n = 0;
    while (running) {
      const url = n++ % 2 === 0 ? tasksUrl : `${lbUrl}/v1/orgs/${tenant.orgId}/projects/${projectId}`;
      let last = 0;
      let ok = false;
      for (let i = 0; i < 5 && !ok; i++) {
        const a = await attempt('GET', url, tenant.token, 'read', samples);
        last = a.status;
        ok = a.status >= 200 && a.status < 300;
        if (!ok) await sleep(200);
      }
      if (!ok) finalFailures.push({ at: Date.now(), kind: 'read', detail: `reader ${r}: 5 attempts, last answer ${last || 'network'}` });
      await sleep(50);
    }
  };

  const loops = [...Array.from({ length: opts.writers }, (_, i) => writer(i)), ...Array.from({ length: opts.readers }, (_, i) => reader(i))];
  return {
    samples,
    finalFailures,
    writes,
    marker: opts.marker,
    async stop() {
      running = false;
      await Promise.all(loops);
    },
  };
}

export function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return 0;
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)]!;
}

export interface WindowFigures {
  requests: number;
  failedAttempts: number;
  errorRate: number;
  p50Ms: number;
  p99Ms: number;
}

export function figures(samples: Sample[]): WindowFigures {
  const ms = samples.map((s) => s.ms).sort((a, b) => a - b);
  const failed = samples.filter((s) => !s.ok).length;
  return {
    requests: samples.length,
    failedAttempts: failed,
    errorRate: samples.length ? Math.round((failed / samples.length) * 10_000) / 10_000 : 0,
    p50Ms: Math.round(percentile(ms, 50)),
    p99Ms: Math.round(percentile(ms, 99)),
  };
}

export interface CanaryPolicy {
  /** abort when the canary's error rate exceeds the others' by more than this (absolute, 0.02 = 2 points) */
  errorRateMargin: number;
  /** abort when, at the end of the window, the canary's p99 exceeds the others' × p99Factor + p99SlackMs */
  p99Factor: number;
  p99SlackMs: number;
  /** the window a passing canary must last, and the longest the drill waits for minSamples canary requests */
  windowMs: number;
  maxWindowMs: number;
  minSamples: number;
}

const pct = (r: number) => `${(r * 100).toFixed(1)} %`;

/**
 * The canary's verdict from its figures and the other instances' over the same window (elapsedMs so far):
 * undefined while undecided. An error-rate breach aborts as soon as there are enough samples; a pass needs
 * the whole window; too few requests to judge by maxWindowMs is an abort (no evidence, no promotion).
 */
export function judgeCanary(c: WindowFigures, o: WindowFigures, elapsedMs: number, p: CanaryPolicy): { verdict: 'pass' | 'abort'; reason: string } | undefined {
  const p99Limit = o.p99Ms * p.p99Factor + p.p99SlackMs;
  const enough = c.requests >= p.minSamples;
  if (enough && c.errorRate - o.errorRate > p.errorRateMargin) {
    return { verdict: 'abort', reason: `error rate ${pct(c.errorRate)} vs ${pct(o.errorRate)} (margin ${Math.round(p.errorRateMargin * 1000) / 10} points)` };
  }
  if (enough && elapsedMs >= p.windowMs) {
    if (c.p99Ms > p99Limit) return { verdict: 'abort', reason: `p99 ${c.p99Ms} ms vs ${o.p99Ms} ms (limit ${p99Limit} ms)` };
    return { verdict: 'pass', reason: `error rate ${pct(c.errorRate)} vs ${pct(o.errorRate)}, p99 ${c.p99Ms} ms vs ${o.p99Ms} ms (limit ${p99Limit} ms)` };
  }
  if (elapsedMs >= p.maxWindowMs) {
    return { verdict: 'abort', reason: `only ${c.requests} canary requests in ${Math.round(elapsedMs / 100) / 10} s (needs ${p.minSamples}): no evidence, no promotion` };
  }
  return undefined;
}
