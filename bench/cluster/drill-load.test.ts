import { describe, expect, it } from 'vitest';
import { figures, judgeCanary, type Sample } from './drill-load.ts';

const policy = { errorRateMargin: 0.02, p99Factor: 2, p99SlackMs: 150, windowMs: 25_000, maxWindowMs: 50_000, minSamples: 50 };

function samples(n: number, opts: { failEvery?: number; ms?: (i: number) => number; server?: string } = {}): Sample[] {
  return Array.from({ length: n }, (_, i) => {
    const ok = !(opts.failEvery && i % opts.failEvery === 0);
    return { at: i, ms: opts.ms?.(i) ?? 40, ok, status: ok ? 200 : 500, server: opts.server ?? 'api-1', kind: 'read' as const };
  });
}

describe('deploy drill: figures and the canary verdict', () => {
  it('computes the error rate and nearest-rank percentiles', () => {
    const f = figures(samples(100, { failEvery: 10, ms: (i) => i + 1 }));
    expect(f).toEqual({ requests: 100, failedAttempts: 10, errorRate: 0.1, p50Ms: 50, p99Ms: 99 });
    expect(figures([])).toEqual({ requests: 0, failedAttempts: 0, errorRate: 0, p50Ms: 0, p99Ms: 0 });
  });

  it('aborts a canary failing a share of requests as soon as it has enough samples, before the window ends', () => {
    const others = figures(samples(500));
    expect(judgeCanary(figures(samples(49, { failEvery: 3 })), others, 5_000, policy)).toBeUndefined();
    const v = judgeCanary(figures(samples(50, { failEvery: 3 })), others, 5_000, policy);
    expect(v?.verdict).toBe('abort');
    expect(v?.reason).toMatch(/error rate 34\.0 % vs 0\.0 %/);
  });

  it('tolerates an error rate within the margin and passes only once the window has elapsed', () => {
    const others = figures(samples(1000, { failEvery: 100 })); // 1 %
    const canary = figures(samples(100, { failEvery: 50 })); // 2 %: 1 point above
    expect(judgeCanary(canary, others, 10_000, policy)).toBeUndefined();
    expect(judgeCanary(canary, others, 25_000, policy)?.verdict).toBe('pass');
  });

  it('aborts on p99 beyond 2 × the others + 150 ms at the end of the window', () => {
    const others = figures(samples(500, { ms: () => 100 }));
    const slow = figures(samples(100, { ms: (i) => (i >= 95 ? 400 : 50) }));
    expect(judgeCanary(slow, others, 25_000, policy)?.verdict).toBe('abort');
    const justUnder = figures(samples(100, { ms: (i) => (i >= 95 ? 350 : 50) }));
    expect(judgeCanary(justUnder, others, 25_000, policy)?.verdict).toBe('pass');
  });

  it('aborts when too few requests reached the canary to judge it', () => {
    const v = judgeCanary(figures(samples(10)), figures(samples(500)), 50_000, policy);
    expect(v?.verdict).toBe('abort');
    expect(v?.reason).toMatch(/only 10 canary requests/);
  });
});
