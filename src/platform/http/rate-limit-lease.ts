import type { RateLimitCheck, RateLimitDecision, RateLimitPolicy, RateLimitStore } from './rate-limit-store.ts';
import { growingLru } from '../cache/lru.ts';

/**
 * Local leases in front of the shared (Redis) limiter, so a busy key costs one Redis round trip per lease
 * instead of one per request.
 *
 * A `consume` that finds no local cell asks the shared store for a lease of up to `n` cells in the same
 * atomic GCRA step that counts the request. `n` follows the key's measured local rate (the cells this
 * instance would use within one lease period), capped at `leasePercent` % of the quota; a key seen for
 * the first time, or used slowly, gets 1 cell: exactly the per-request behaviour. Cells are taken from the
 * shared bucket when they are leased, so every instance still draws from one budget; a cell not used
 * within `leaseMs` is dropped.
 *
 * What this trades (the stated bound, tested in rate-limit-lease.test.ts):
 * - **Overshoot**: in any window of the policy, a key admits at most `quota + instances × cap` requests,
 *   where `cap = max(1, floor(quota × leasePercent / 100))` (cells leased just before the window, used in it).
 *   With the defaults (2 %, 1,200/min per principal) and two instances: at most 1,248 instead of 1,200.
 * - **Undershoot**: cells an instance leased and did not use (its traffic stopped or moved) are lost for
 *   the window: at most `cap` per key and instance per lease period.
 * - **Auth-failure gate**: an "allowed" answer is reused for `leaseMs`, so an address whose failure budget
 *   another instance just spent is refused here up to `leaseMs` later (a failure counted here clears it).
 * Small quotas (cap 1) and `leasePercent` 0 are exact: every request reaches the shared store.
 */
export interface LeaseOptions {
  /** Largest lease as a percentage of the policy's quota (0 disables leasing). */
  leasePercent: number;
  /** How long leased cells and a cached gate answer stay usable. */
  leaseMs: number;
  now?: () => number;
  maxKeys?: number;
}

interface Lease {
  cells: number;
  expiresAt: number;
  /** The shared bucket's remaining cells when the lease was last granted (for the RateLimit header). */
  remaining: number;
  resetAt: number;
  /** This instance's consumes of the key in the current and the previous lease period: its local rate. */
  hits: number;
  prevHits: number;
  since: number;
}

export function leaseCap(policy: RateLimitPolicy, leasePercent: number): number {
  return Math.max(1, Math.floor((policy.quota * leasePercent) / 100));
}

export function createLeasingRateLimitStore(shared: RateLimitStore, opts: LeaseOptions): RateLimitStore {
  const now = opts.now ?? Date.now;
  const leases = growingLru<string, Lease>({ entries: opts.maxKeys ?? 100_000 });
  const gates = growingLru<string, { until: number; decision: RateLimitDecision }>({ entries: opts.maxKeys ?? 100_000 });

  function stateOf(key: string, t: number): Lease {
    let lease = leases.get(key);
    if (!lease) {
      lease = { cells: 0, expiresAt: 0, remaining: 0, resetAt: t, hits: 0, prevHits: 0, since: t };
      leases.set(key, lease);
    }
    if (t - lease.since >= opts.leaseMs) {
      // An idle gap longer than a period means no recent rate at all.
      lease.prevHits = t - lease.since >= 2 * opts.leaseMs ? 0 : lease.hits;
      lease.hits = 0;
      lease.since = t;
    }
    if (lease.expiresAt <= t) lease.cells = 0;
    return lease;
  }

  /** A cell from the key's lease (as `stateOf` returned it: expired cells already dropped), or undefined. */
  function takeLocal(lease: Lease, t: number): RateLimitDecision | undefined {
    if (lease.cells <= 0) return undefined;
    lease.cells--;
    return { allowed: true, remaining: lease.remaining + lease.cells, resetSec: Math.max(0, Math.ceil((lease.resetAt - t) / 1000)), retryAfterSec: 0 };
  }

  /** Cells to ask for: as many as this instance used in a recent period, up to the cap. */
  function wanted(lease: Lease, policy: RateLimitPolicy): number {
    return Math.min(leaseCap(policy, opts.leasePercent), Math.max(1, lease.hits, lease.prevHits));
  }

  function record(lease: Lease, d: RateLimitDecision, t: number): void {
    if (!d.allowed) return;
    lease.cells += Math.max(0, (d.granted ?? 1) - 1);
    lease.expiresAt = t + opts.leaseMs;
    lease.remaining = d.remaining;
    lease.resetAt = t + d.resetSec * 1000;
  }

  async function check(checks: RateLimitCheck[]): Promise<Array<RateLimitDecision | undefined>> {
    const t = now();
    const out: Array<RateLimitDecision | undefined> = checks.map(() => undefined);
    const remote: number[] = [];
    const local: number[] = [];
    for (let i = 0; i < checks.length; i++) {
      const c = checks[i]!;
      if (c.mode === 'gate') {
        const cached = gates.get(c.key);
        if (cached && cached.until > t) out[i] = cached.decision;
        else remote.push(i);
      } else if (c.mode === 'consume') {
        const lease = stateOf(c.key, t);
        lease.hits++;
        (lease.cells > 0 ? local : remote).push(i);
      } else {
        remote.push(i);
      }
    }
    if (remote.length > 0) {
      const asked = remote.map((i) => {
        const c = checks[i]!;
        return c.mode === 'consume' ? { ...c, count: wanted(stateOf(c.key, t), c.policy) } : c;
      });
      const answers = await shared.check(asked);
      const after = now();
      for (let n = 0; n < remote.length; n++) {
        const i = remote[n]!;
        const c = checks[i]!;
        const d = answers[n];
        out[i] = d;
        if (!d) continue;
        if (c.mode === 'consume') {
          const lease = stateOf(c.key, after);
          record(lease, d, after);
          // What the caller may still send counts the cells leased to this instance for it.
          if (d.allowed) out[i] = { ...d, remaining: d.remaining + lease.cells };
        }
        if (c.mode === 'gate') {
          if (d.allowed) gates.set(c.key, { until: after + opts.leaseMs, decision: d });
          // A refusing gate: nothing else is consumed, locally either.
          else return out;
        }
      }
    }
    for (const i of local) {
      const c = checks[i]!;
      const t2 = now();
      // A concurrent request may have used the last cell meanwhile: then the shared store decides this one.
      out[i] = takeLocal(stateOf(c.key, t2), t2) ?? (await shared.check([{ ...c, count: 1 }]))[0];
    }
    return out;
  }

  return {
    kind: shared.kind,
    check,
    async consume(key, policy) {
      // A failure counted here must be seen by this instance's next gate at once.
      gates.delete(key);
      return (await check([{ key, policy, mode: 'consume' }]))[0]!;
    },
    peek: (key, policy) => shared.peek(key, policy),
  };
}
