import { spawnSync } from 'node:child_process';
import { Writable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { signup } from '../../../test/helpers/auth.ts';
import { createTestPlatform, type TestPlatform } from '../../../test/helpers/test-platform.ts';
import { createLogger } from './logger.ts';
import { createFastHistogram, registerJobMetrics, registerOutboxMetrics, registry } from './metrics.ts';
import { registerEventMetrics } from './event-metrics.ts';
import { startMetricsServer } from './metrics-server.ts';
import { createQueryObserver } from './query-observer.ts';

const TOKEN = 'scrape-token-0123456789';
const promtool = spawnSync('promtool', ['--version']).status === 0;
const sink = new Writable({ write: (_c, _e, cb) => cb() });

/** Every family the issue names; each must be in a real scrape. */
const FAMILIES = [
  'plinth_http_request_duration_seconds',
  'plinth_http_requests_in_flight',
  'plinth_db_pool_connections',
  'plinth_db_pool_waiting_requests',
  'plinth_db_query_duration_seconds',
  'plinth_db_slow_queries_total',
  'plinth_cache_requests_total',
  'plinth_outbox_backlog',
  'plinth_outbox_oldest_age_seconds',
  'plinth_audit_backlog',
  'plinth_audit_backlog_oldest_age_seconds',
  'plinth_jobs',
  'plinth_job_duration_seconds',
  'plinth_circuit_breaker_state',
  'plinth_rate_limit_rejections_total',
  'plinth_readiness_status',
  'plinth_readiness_transitions_total',
  'nodejs_eventloop_lag_seconds',
  'nodejs_eventloop_lag_p99_seconds',
  'process_resident_memory_bytes',
  'nodejs_heap_size_used_bytes',
];

describe('GET /metrics: a real Prometheus scrape over HTTP', () => {
  let tp: TestPlatform;
  let base: string;
  let stopEventMetrics: () => void;

  beforeAll(async () => {
    const logger = createLogger('silent', sink);
    tp = await createTestPlatform({
      logger,
      // One unauthenticated request per IP per window: the second public call is a real 429.
      env: { METRICS_TOKEN: TOKEN, RATE_LIMIT_IP: '1' },
      db: { onQuery: createQueryObserver({ logger, slowQueryMs: 10_000 }) },
    });
    // As openPlatform does: the outbox and job gauges read the real event bus tables.
    stopEventMetrics = registerEventMetrics({ db: tp.db, events: tp.events });
    await tp.app.listen({ port: 0, host: '127.0.0.1' });
    const address = tp.app.server.address();
    base = `http://127.0.0.1:${typeof address === 'object' && address ? address.port : 0}`;
  });
  afterAll(async () => {
    stopEventMetrics?.();
    await tp?.close();
  });

  async function scrape(): Promise<string> {
    const res = await fetch(`${base}/metrics`, { headers: { authorization: `Bearer ${TOKEN}` } });
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toMatch(/^text\/plain; version=0\.0\.4/);
    return res.text();
  }

  function sample(text: string, name: string, labels: Record<string, string> = {}): number | undefined {
    for (const line of text.split('\n')) {
      if (!line.startsWith(`${name}{`) && !line.startsWith(`${name} `)) continue;
      const ok = Object.entries(labels).every(([k, v]) => line.includes(`${k}="${v}"`));
      if (ok) return Number(line.slice(line.lastIndexOf(' ') + 1));
    }
    return undefined;
  }

  it('has every metric family, with samples from real traffic, and promtool accepts it', async () => {
    for (let i = 0; i < 3; i++) expect((await fetch(`${base}/livez`)).status).toBe(200);
    expect((await fetch(`${base}/readyz`)).status).toBe(200);
    expect((await fetch(`${base}/no/such/route/0190a4c2-8f5e-7cc3-b5a8-3f1e3c0d9a11`)).status).toBe(404);
    expect((await fetch(`${base}/v1/orgs/0190a4c2-8f5e-7cc3-b5a8-3f1e3c0d9a11/anything`)).status).toBe(404);

    // Real module traffic: signup (uses the IP quota), a project created,
    // then an unauthenticated login over the IP quota (429).
    const user = await signup(tp.app, { organizationName: 'Metrics Org' });
    const created = await tp.app.inject({ method: 'POST', url: `/v1/orgs/${user.orgId}/projects`, headers: user.auth, payload: { key: 'OBS', name: 'Observed' } });
    expect(created.statusCode).toBe(201);
    // The edge cache helper (not yet wired into a module's reads): a miss, then a hit.
    const cache = tp.cache.namespace<{ n: number }>('obs_probe', { ttlSec: 60 });
    for (let i = 0; i < 2; i++) expect(await cache.get(user.orgId, 'k', async () => ({ n: 1 }))).toEqual({ n: 1 });
    const limited = await tp.app.inject({ method: 'POST', url: '/v1/auth/login', payload: { email: user.email, password: 'wrong password 123' } });
    expect(limited.statusCode).toBe(429);

    const text = await scrape();
    for (const family of FAMILIES) expect(text, family).toContain(`# TYPE ${family} `);

    expect(sample(text, 'plinth_http_request_duration_seconds_count', { method: 'GET', route: '/livez', status_class: '2xx' })).toBeGreaterThanOrEqual(3);
    expect(sample(text, 'plinth_http_request_duration_seconds_bucket', { route: '/livez', le: '+Inf' })).toBeGreaterThanOrEqual(3);
    expect(sample(text, 'plinth_http_request_duration_seconds_count', { route: 'unmatched', status_class: '4xx' })).toBeGreaterThanOrEqual(2);
    // Low cardinality: route templates only, never a raw URL or an id.
    expect(text).not.toMatch(/0190a4c2|\/no\/such\/route/);
    expect(text).not.toContain(user.orgId);
    expect(text).not.toContain(user.userId);
    // The scrape itself is the only request in flight: every earlier request was counted out again.
    expect(sample(text, 'plinth_http_requests_in_flight')).toBe(1);
    expect(sample(text, 'plinth_readiness_status')).toBe(1);
    expect(sample(text, 'plinth_db_query_duration_seconds_count', { operation: 'select' })).toBeGreaterThanOrEqual(1);
    expect(sample(text, 'plinth_db_pool_connections', { state: 'idle' })).toBeGreaterThanOrEqual(0);
    expect(sample(text, 'plinth_db_pool_waiting_requests')).toBe(0);
    expect(sample(text, 'plinth_http_request_duration_seconds_count', { method: 'POST', route: '/v1/orgs/:orgId/projects', status_class: '2xx' })).toBe(1);
    expect(sample(text, 'plinth_rate_limit_rejections_total', { scope: 'ip' })).toBe(1);
    expect(sample(text, 'plinth_cache_requests_total', { cache: 'obs_probe', result: 'miss' })).toBeGreaterThanOrEqual(1);
    expect(sample(text, 'plinth_cache_requests_total', { cache: 'obs_probe', result: 'hit' })).toBeGreaterThanOrEqual(1);
    expect(sample(text, 'plinth_circuit_breaker_state', { breaker: 'redis' })).toBe(0);
    expect(sample(text, 'plinth_db_query_duration_seconds_count', { operation: 'insert' })).toBeGreaterThanOrEqual(1);
    // Outbox from the real event bus: the project creation wrote an event and no worker runs here.
    expect(sample(text, 'plinth_outbox_backlog')).toBeGreaterThanOrEqual(1);
    expect(sample(text, 'plinth_outbox_oldest_age_seconds')).toBeGreaterThan(0);
    // The audit sequencer's backlog: the signup's and the project's audit events, not yet chained.
    expect(sample(text, 'plinth_audit_backlog')).toBeGreaterThanOrEqual(4);
    expect(sample(text, 'plinth_audit_backlog_oldest_age_seconds')).toBeGreaterThan(0);
    await tp.modules.audit.sequence();
    expect(sample(await scrape(), 'plinth_audit_backlog')).toBe(0);
    expect(sample(text, 'process_resident_memory_bytes')).toBeGreaterThan(1_000_000);
    expect(sample(text, 'nodejs_eventloop_lag_seconds')).toBeGreaterThanOrEqual(0);

    if (!promtool) {
      console.warn('promtool not installed: skipping `promtool check metrics`');
      return;
    }
    const check = spawnSync('promtool', ['check', 'metrics'], { input: text, encoding: 'utf8' });
    expect(check.stdout + check.stderr).toBe('');
    expect(check.status).toBe(0);
  });

  it('requires the bearer token when METRICS_TOKEN is set (problem+json 401 otherwise)', async () => {
    for (const authorization of [undefined, 'Bearer wrong', `Bearer ${TOKEN}x`, TOKEN]) {
      const res = await fetch(`${base}/metrics`, { headers: authorization ? { authorization } : {} });
      expect(res.status).toBe(401);
      expect(res.headers.get('content-type')).toMatch(/^application\/problem\+json/);
      expect(res.headers.get('www-authenticate')).toBe('Bearer');
      const body = await res.json();
      expect(body).toMatchObject({ status: 401, code: 'METRICS.UNAUTHORIZED' });
      expect(JSON.stringify(body)).not.toContain('plinth_');
    }
  });

  it('is not in the OpenAPI document', async () => {
    const res = await tp.app.inject({ url: '/openapi.json' });
    expect(Object.keys(res.json().paths ?? {})).not.toContain('/metrics');
  });

  it('reports outbox and job sources registered at run time, survives a failing source, and stops after unregister', async () => {
    // Sources add up with the real outbox registered in beforeAll.
    const base = sample(await scrape(), 'plinth_outbox_backlog') ?? 0;
    let backlog = 4;
    const unregisterOutbox = registerOutboxMetrics(async () => ({ backlog, oldestAgeSeconds: 86_400.5 }));
    const unregisterJobs = registerJobMetrics(async () => [
      { queue: 'events', state: 'waiting', count: 2 },
      { queue: 'events', state: 'dead', count: 1 },
    ]);
    let text = await scrape();
    expect(sample(text, 'plinth_outbox_backlog')).toBe(base + 4);
    expect(sample(text, 'plinth_outbox_oldest_age_seconds')).toBe(86_400.5);
    expect(sample(text, 'plinth_jobs', { queue: 'events', state: 'dead' })).toBe(1);

    // A source that throws (database down) must not break the scrape: the last value stays.
    backlog = 9;
    const unregisterBroken = registerOutboxMetrics(async () => {
      throw new Error('connection refused');
    });
    text = await scrape();
    expect(sample(text, 'plinth_outbox_backlog')).toBe(base + 4);
    unregisterBroken();
    text = await scrape();
    expect(sample(text, 'plinth_outbox_backlog')).toBe(base + 9);

    unregisterOutbox();
    unregisterJobs();
  });

  it('counts readiness transitions when /readyz flips', async () => {
    const before = sample(await scrape(), 'plinth_readiness_transitions_total') ?? 0;
    tp.lifecycle.state.draining = true;
    try {
      expect((await fetch(`${base}/readyz`)).status).toBe(503);
      const text = await scrape();
      expect(sample(text, 'plinth_readiness_status')).toBe(0);
      expect(sample(text, 'plinth_readiness_transitions_total')).toBe(before + 1);
    } finally {
      tp.lifecycle.state.draining = false;
    }
    expect((await fetch(`${base}/readyz`)).status).toBe(200);
    expect(sample(await scrape(), 'plinth_readiness_transitions_total')).toBe(before + 2);
  });

  it('the hot-path histogram exports cumulative buckets with Prometheus le semantics', async () => {
    const h = createFastHistogram({ name: 'plinth_test_fast_seconds', help: 'test', buckets: [0.1, 1] });
    const s = h.series({ kind: 'a' });
    for (const v of [0.05, 0.1, 0.5, 1, 7]) h.observe(s, v);
    h.series({ kind: 'unused' });
    const text = await registry.getSingleMetricAsString('plinth_test_fast_seconds');
    expect(text).toContain('plinth_test_fast_seconds_bucket{kind="a",le="0.1"} 2');
    expect(text).toContain('plinth_test_fast_seconds_bucket{kind="a",le="1"} 4');
    expect(text).toContain('plinth_test_fast_seconds_bucket{kind="a",le="+Inf"} 5');
    expect(text).toContain('plinth_test_fast_seconds_sum{kind="a"} 8.65');
    expect(text).toContain('plinth_test_fast_seconds_count{kind="a"} 5');
    expect(text).toContain('plinth_test_fast_seconds_count{kind="unused"} 0');
    registry.removeSingleMetric('plinth_test_fast_seconds');
  });

  it('the worker role serves the same registry on its own metrics listener', async () => {
    const server = await startMetricsServer({ port: 0, host: '127.0.0.1', token: TOKEN });
    try {
      const address = server.address();
      const url = `http://127.0.0.1:${typeof address === 'object' && address ? address.port : 0}`;
      const ok = await fetch(`${url}/metrics`, { headers: { authorization: `Bearer ${TOKEN}` } });
      expect(ok.status).toBe(200);
      expect(await ok.text()).toContain('# TYPE plinth_outbox_backlog gauge');
      const denied = await fetch(`${url}/metrics`);
      expect(denied.status).toBe(401);
      expect(denied.headers.get('content-type')).toMatch(/^application\/problem\+json/);
      expect(await denied.json()).toMatchObject({ status: 401, code: 'METRICS.UNAUTHORIZED' });
      expect((await fetch(`${url}/other`)).status).toBe(404);
      expect((await fetch(`${url}/metrics`, { method: 'POST' })).status).toBe(405);
      expect((await fetch(`${url}/livez`)).status).toBe(200);
    } finally {
      await new Promise((r) => server.close(r));
    }
  });
});
