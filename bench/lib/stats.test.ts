import { describe, expect, it } from 'vitest';
import { createSeriesRecorder, percentiles, percentileSorted, settledAt, type SecondSample } from './stats.ts';

describe('percentiles', () => {
  it('uses nearest rank', () => {
    const values = Array.from({ length: 100 }, (_, i) => i + 1); // 1..100
    expect(percentileSorted(values, 50)).toBe(50);
    expect(percentileSorted(values, 95)).toBe(95);
    expect(percentileSorted(values, 99)).toBe(99);
    expect(percentileSorted(values, 100)).toBe(100);
  });

  it('handles empty and single-value input', () => {
    expect(percentiles([])).toEqual({ p50: 0, p95: 0, p99: 0, max: 0, mean: 0 });
    expect(percentiles([7])).toEqual({ p50: 7, p95: 7, p99: 7, max: 7, mean: 7 });
  });

  it('does not depend on input order', () => {
    expect(percentiles([5, 1, 3, 2, 4]).p50).toBe(3);
  });
});

describe('series recorder', () => {
  it('buckets responses by second since start and counts 2xx separately', () => {
    const rec = createSeriesRecorder(10_000);
    rec.record(10_100, 5, 200);
    rec.record(10_900, 15, 429);
    rec.record(12_500, 40, 201);
    const s = rec.series();
    expect(s).toHaveLength(3);
    expect(s[0]).toMatchObject({ t: 0, count: 2, ok: 1, p50: 5, p99: 15 });
    expect(s[1]).toMatchObject({ t: 1, count: 0, ok: 0 });
    expect(s[2]).toMatchObject({ t: 2, count: 1, ok: 1, p95: 40 });
  });
});

describe('settledAt', () => {
  const mk = (p95s: number[]): SecondSample[] => p95s.map((p95, t) => ({ t, count: 10, ok: 10, p50: p95 / 2, p95, p99: p95 }));

  it('finds the first second from which p95 stays under the limit', () => {
    expect(settledAt(mk([5, 5, 300, 300, 80, 6, 5, 5]), 2, 10)).toBe(5);
  });

  it('is undefined when latency never settles', () => {
    expect(settledAt(mk([5, 300, 300, 300]), 1, 10)).toBeUndefined();
  });
});
