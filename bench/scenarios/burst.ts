import { runLoad, type LoadResult } from '../lib/load.ts';
import { createSeriesRecorder, round, settledAt } from '../lib/stats.ts';
import { skipped, target, type Scenario } from '../lib/types.ts';
import { pickCachedRead } from './fixtures.ts';

const BURST_SEC = 10;

/**
 * Steady rate → 10× for 10 s → steady again, on one timeline. The steady rate is a quarter of the
 * endpoint's measured closed-loop capacity, so the burst is ~2.5× what the instance can serve: it must
 * shed (429/503 with Retry-After) rather than queue, keep admitted requests fast, and recover.
 */
export const burst: Scenario = {
  name: 'burst',
  title: 'Burst: 10× the steady rate for 10 s',
  async run(ctx) {
    const p5 = () => [
      target('P5a', 'burst: only 2xx or 429/503 with Retry-After', undefined, 0, 'ms', '<='),
      target('P5b', 'burst: admitted p99 < 250 ms', undefined, 250, 'ms', '<'),
      target('P5c', 'burst: back to steady p95 within 5 s', undefined, 5, 's', '<='),
    ];
    const pick = await pickCachedRead(ctx);
    if (!pick) return skipped(this, 'identity (signup + an authenticated GET) not available', p5());
    const probe = await runLoad({ baseUrl: ctx.api.baseUrl, serverPid: ctx.api.pid, request: pick.request, durationSec: 3, connections: ctx.opts.connections });
    const steadyRate = Math.max(20, Math.round(probe.okPerSec / 4));
    const steadySec = Math.max(5, Math.round(ctx.opts.durationSec / 2));
    const recoverySec = 10;
    const recorder = createSeriesRecorder(Date.now());
    const common = { baseUrl: ctx.api.baseUrl, serverPid: ctx.api.pid, request: pick.request, recorder };
    const steady = await runLoad({ ...common, durationSec: steadySec, connections: 20, rate: steadyRate });
    const burstStart = steady.series.length;
    const peak = await runLoad({ ...common, durationSec: BURST_SEC, connections: 300, rate: steadyRate * 10 });
    const burstEnd = peak.series.length;
    const recovery = await runLoad({ ...common, durationSec: recoverySec, connections: 20, rate: steadyRate });
    const series = recovery.series;

    const steadyP95 = steady.latencyMs.p95;
    const limit = Math.max(steadyP95 * 2, steadyP95 + 10);
    const settled = settledAt(series, burstEnd, limit);
    const recoverySecs = settled === undefined ? undefined : Math.max(0, settled - burstEnd);
    const badStatuses = peak.unexpected + recovery.unexpected + peak.rejectedWithoutRetryAfter + recovery.rejectedWithoutRetryAfter
      + peak.errors + peak.timeouts + recovery.errors + recovery.timeouts;
    const all: LoadResult = {
      ...peak,
      series,
      statuses: mergeCounts(steady.statuses, peak.statuses, recovery.statuses),
    };
    return {
      name: this.name, title: this.title, status: 'ok', endpoint: pick.endpoint, load: all,
      phases: { steady, burst: peak, recovery },
      metrics: {
        steadyRate, burstRate: steadyRate * 10, burstStartSec: burstStart, burstEndSec: burstEnd,
        steadyP95Ms: steadyP95, recoveryLimitMs: round(limit), recoverySec: recoverySecs ?? 'never',
        admittedP99Ms: peak.okLatencyMs.p99, shed: (peak.statuses['429'] ?? 0) + (peak.statuses['503'] ?? 0),
        connErrorsAndTimeouts: peak.errors + peak.timeouts + recovery.errors + recovery.timeouts,
        burstP99AllMs: peak.latencyMs.p99,
      },
      targets: [
        { ...target('P5a', 'burst: only 2xx or 429/503 with Retry-After', badStatuses, 0, 'ms', '<='), measured: `${badStatuses} bad`, threshold: '0 bad' },
        target('P5b', 'burst: admitted p99 < 250 ms', peak.okLatencyMs.p99, 250, 'ms', '<'),
        target('P5c', 'burst: back to steady p95 within 5 s', recoverySecs ?? Number.POSITIVE_INFINITY, 5, 's', '<='),
      ],
    };
  },
};

function mergeCounts(...parts: Record<string, number>[]): Record<string, number> {
  const out: Record<string, number> = {};
  for (const p of parts) for (const [k, v] of Object.entries(p)) out[k] = (out[k] ?? 0) + v;
  return out;
}
