/** Percentiles and per-second series for load results. Pure functions, unit-tested in stats.test.ts. */

export interface SecondSample {
  /** Seconds since the load started (0-based). */
  t: number;
  /** Responses completed in this second (all statuses). */
  count: number;
  ok: number;
  p50: number;
  p95: number;
  p99: number;
}

/** Nearest-rank percentile of an ascending-sorted array; 0 for an empty one. */
export function percentileSorted(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) return 0;
  const rank = Math.ceil((p / 100) * sorted.length);
  return sorted[Math.min(sorted.length - 1, Math.max(0, rank - 1))]!;
}

export function percentiles(values: readonly number[]): { p50: number; p95: number; p99: number; max: number; mean: number } {
  if (values.length === 0) return { p50: 0, p95: 0, p99: 0, max: 0, mean: 0 };
  const sorted = [...values].sort((a, b) => a - b);
  const mean = sorted.reduce((s, v) => s + v, 0) / sorted.length;
  return {
    p50: percentileSorted(sorted, 50),
    p95: percentileSorted(sorted, 95),
    p99: percentileSorted(sorted, 99),
    max: sorted[sorted.length - 1]!,
    mean,
  };
}

/**
 * Collects (completion time, latency, status) and turns them into one sample per second. Latency
 * percentiles in a second include every response (so a burst's rejected requests show up too).
 */
export function createSeriesRecorder(startedAt: number) {
  const buckets: { lat: number[]; ok: number }[] = [];
  return {
    record(now: number, latencyMs: number, status: number) {
      const t = Math.max(0, Math.floor((now - startedAt) / 1000));
      while (buckets.length <= t) buckets.push({ lat: [], ok: 0 });
      const b = buckets[t]!;
      b.lat.push(latencyMs);
      if (status >= 200 && status < 300) b.ok += 1;
    },
    series(): SecondSample[] {
      return buckets.map((b, t) => {
        const p = percentiles(b.lat);
        return { t, count: b.lat.length, ok: b.ok, p50: round(p.p50), p95: round(p.p95), p99: round(p.p99) };
      });
    },
  };
}

export function round(n: number, digits = 2): number {
  const f = 10 ** digits;
  return Math.round(n * f) / f;
}

/**
 * First second at or after `from` from which the p95 stays within `limitMs` for `holdSeconds`
 * consecutive seconds; undefined if it never settles. Used for "back to steady p95 within 5 s".
 */
export function settledAt(series: readonly SecondSample[], from: number, limitMs: number, holdSeconds = 2): number | undefined {
  for (let i = from; i < series.length; i++) {
    let ok = true;
    for (let j = i; j < Math.min(series.length, i + holdSeconds); j++) {
      const s = series[j]!;
      if (s.count > 0 && s.p95 > limitMs) ok = false;
    }
    if (ok && i + holdSeconds <= series.length) return i;
  }
  return undefined;
}
