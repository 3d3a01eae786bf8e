import { Writable } from 'node:stream';
import { register } from 'prom-client';
import { describe, expect, it } from 'vitest';
import { createLogger } from '../observability/logger.ts';
import { BrokenCircuitError, BulkheadRejectedError, createDestinationPolicy, createOutboundPolicies, createPolicy, isTransientError, TaskCancelledError } from './policy.ts';

const transientError = () => Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:1'), { code: 'ECONNREFUSED' });
const clientError = () => Object.assign(new Error('bad request'), { status: 400 });

async function gaugeValue(breaker: string): Promise<number | undefined> {
  const metric = await register.getSingleMetric('plinth_circuit_breaker_state')?.get();
  return metric?.values.find((v) => v.labels.breaker === breaker)?.value;
}

describe('resilience policies', () => {
  it('classifies transient errors: network, timeouts, 408/429/5xx — never 4xx', () => {
    expect(isTransientError(transientError())).toBe(true);
    expect(isTransientError(new TaskCancelledError('timeout'))).toBe(true);
    expect(isTransientError(Object.assign(new Error('x'), { status: 503 }))).toBe(true);
    expect(isTransientError(Object.assign(new Error('x'), { statusCode: 429 }))).toBe(true);
    expect(isTransientError(clientError())).toBe(false);
    expect(isTransientError(Object.assign(new Error('x'), { status: 404 }))).toBe(false);
    expect(isTransientError(new Error("Stream isn't writeable and enableOfflineQueue options is false"))).toBe(true);
    expect(isTransientError(new BrokenCircuitError())).toBe(false);
    expect(isTransientError('nope')).toBe(false);
  });

  it('retries transient errors with backoff, but not client errors', async () => {
    const policy = createPolicy({ name: 'retry-test', retries: 3, retryInitialDelayMs: 5, retryMaxDelayMs: 20 });
    let calls = 0;
    const value = await policy.execute(async () => {
      calls++;
      if (calls < 3) throw transientError();
      return 'ok';
    });
    expect(value).toBe('ok');
    expect(calls).toBe(3);

    calls = 0;
    await expect(policy.execute(async () => {
      calls++;
      throw clientError();
    })).rejects.toThrow('bad request');
    expect(calls).toBe(1);

    calls = 0;
    await expect(policy.execute(async () => {
      calls++;
      throw transientError();
    })).rejects.toThrow(/ECONNREFUSED/);
    expect(calls).toBe(4); // first attempt + 3 retries
  });

  it('times out a slow call and aborts its signal', async () => {
    const policy = createPolicy({ name: 'timeout-test', timeoutMs: 50 });
    let aborted = false;
    const started = Date.now();
    await expect(
      policy.execute(
        (signal) =>
          new Promise((resolve) => {
            signal.addEventListener('abort', () => (aborted = true));
            setTimeout(resolve, 2_000);
          }),
      ),
    ).rejects.toBeInstanceOf(TaskCancelledError);
    expect(Date.now() - started).toBeLessThan(500);
    expect(aborted).toBe(true);
  });

  it('abandonOnTimeout (the Redis policy): abandons a slow call within 1.1 × the timeout, opens its breaker, and a later call resolves', async () => {
    const policy = createPolicy({ name: 'abandon-test', timeoutMs: 60, breaker: { threshold: 2, halfOpenAfterMs: 100 }, abandonOnTimeout: true });
    const slow = () => policy.execute(() => new Promise((resolve) => setTimeout(resolve, 1_000)));
    const started = Date.now();
    await expect(slow()).rejects.toBeInstanceOf(TaskCancelledError);
    const took = Date.now() - started;
    expect(took).toBeGreaterThanOrEqual(59);
    expect(took).toBeLessThan(400);
    expect(await policy.execute(async () => 'fast')).toBe('fast');
    expect(policy.breakerState()).toBe('closed');
    await expect(slow()).rejects.toBeInstanceOf(TaskCancelledError);
    await expect(slow()).rejects.toBeInstanceOf(TaskCancelledError);
    expect(policy.breakerState()).toBe('open');
    await expect(policy.execute(async () => 'x')).rejects.toBeInstanceOf(BrokenCircuitError);
    await new Promise((r) => setTimeout(r, 120));
    expect(await policy.execute(async () => 'back')).toBe('back');
    expect(policy.breakerState()).toBe('closed');
    // Errors pass through unchanged.
    await expect(policy.execute(async () => Promise.reject(clientError()))).rejects.toThrow('bad request');
  });

  it('opens the breaker after consecutive failures, fails fast, half-opens and closes; logs and exports each state', async () => {
    const lines: string[] = [];
    const logger = createLogger('info', new Writable({ write: (c, _e, cb) => (lines.push(c.toString()), cb()) }));
    const policy = createPolicy({ name: 'breaker-test', breaker: { threshold: 3, halfOpenAfterMs: 100 }, logger });
    expect(await gaugeValue('breaker-test')).toBe(0);
    for (let i = 0; i < 3; i++) await expect(policy.execute(async () => Promise.reject(transientError()))).rejects.toThrow();
    expect(policy.breakerState()).toBe('open');
    expect(await gaugeValue('breaker-test')).toBe(1);
    let called = false;
    await expect(policy.execute(async () => (called = true))).rejects.toBeInstanceOf(BrokenCircuitError);
    expect(called).toBe(false);
    // 4xx are not the dependency's fault: they never open the breaker.
    const other = createPolicy({ name: 'breaker-test-4xx', breaker: { threshold: 2, halfOpenAfterMs: 100 } });
    for (let i = 0; i < 5; i++) await expect(other.execute(async () => Promise.reject(clientError()))).rejects.toThrow();
    expect(other.breakerState()).toBe('closed');

    await new Promise((r) => setTimeout(r, 120));
    expect(await policy.execute(async () => 'recovered')).toBe('recovered');
    expect(policy.breakerState()).toBe('closed');
    expect(await gaugeValue('breaker-test')).toBe(0);
    const states = lines.map((l) => JSON.parse(l)).filter((l) => l.breaker === 'breaker-test').map((l) => l.state);
    expect(states).toEqual(['open', 'half-open', 'closed']);
  });

  it('bulkhead rejects work beyond its limit and queue', async () => {
    const policy = createPolicy({ name: 'bulkhead-test', bulkhead: { limit: 2, queue: 1 } });
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    const running = [0, 1, 2].map(() => policy.execute(() => gate.then(() => 'done')));
    await expect(policy.execute(async () => 'extra')).rejects.toBeInstanceOf(BulkheadRejectedError);
    release();
    expect(await Promise.all(running)).toEqual(['done', 'done', 'done']);
  });

  it('provides shared policies for redis, smtp, payment and webhook calls', async () => {
    const policies = createOutboundPolicies();
    expect(Object.keys(policies).sort()).toEqual(['payment', 'redis', 'smtp', 'webhook']);
    expect(await policies.smtp.execute({ destination: 'smtp.example:587' }, async () => 250)).toBe(250);
    expect(policies.payment.breakerState('gateway')).toBe('closed');
  });
});

describe('per-destination policies', () => {
  const failing = () => Promise.reject(Object.assign(new Error('upstream 503'), { status: 503 }));

  it('opens the breaker of one destination only', async () => {
    const p = createDestinationPolicy({ name: 'dest-test', breaker: { threshold: 3, halfOpenAfterMs: 60_000 }, perTenantLimit: 10, global: { limit: 10, queue: 0 } });
    for (let i = 0; i < 3; i++) await expect(p.execute({ destination: 'a.example', tenantId: 't1' }, failing)).rejects.toThrow('503');
    await expect(p.execute({ destination: 'a.example', tenantId: 't2' }, async () => 1)).rejects.toBeInstanceOf(BrokenCircuitError);
    expect(await p.execute({ destination: 'b.example', tenantId: 't1' }, async () => 2)).toBe(2);
    expect(p.breakerState('a.example')).toBe('open');
    expect(p.breakerState('b.example')).toBe('closed');
    const open = await register.getSingleMetric('plinth_outbound_breakers_open')?.get();
    expect(open?.values.find((v) => v.labels.policy === 'dest-test')?.value).toBe(1);
  });

  it('caps concurrent calls per tenant and releases the slots', async () => {
    const p = createDestinationPolicy({ name: 'tenant-cap', perTenantLimit: 2, global: { limit: 10, queue: 0 } });
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    const held = [1, 2].map((i) => p.execute({ destination: `d${i}`, tenantId: 'noisy' }, () => gate));
    await expect(p.execute({ destination: 'd3', tenantId: 'noisy' }, async () => 3)).rejects.toBeInstanceOf(BulkheadRejectedError);
    expect(await p.execute({ destination: 'd3', tenantId: 'quiet' }, async () => 3)).toBe(3);
    release();
    await Promise.all(held);
    expect(await p.execute({ destination: 'd3', tenantId: 'noisy' }, async () => 4)).toBe(4);
  });

  it('keeps at most maxDestinations policies (LRU)', async () => {
    const p = createDestinationPolicy({ name: 'lru', perTenantLimit: 5, global: { limit: 5, queue: 0 }, maxDestinations: 50, breaker: { threshold: 5, halfOpenAfterMs: 1000 } });
    for (let i = 0; i < 500; i++) await p.execute({ destination: `host-${i}.example`, tenantId: 't' }, async () => i);
    expect(p.size()).toBe(50);
  });
});
