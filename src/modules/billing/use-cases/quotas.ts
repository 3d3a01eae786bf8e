import { systemActor } from '../../../platform/http/actor.ts';
import { createIntervalCounter, type CounterBatch } from '../../../platform/observability/interval-counter.ts';
import { quotaExceeded } from '../billing.errors.ts';
import * as subs from '../subscriptions.repo.ts';
import { usageSince } from '../usage.repo.ts';
import { tenantCtx, type BillingContext } from './context.ts';
import type { EntitlementSnapshot, EntitlementUseCases } from './entitlements.ts';
import type { UsageUseCases } from './usage.ts';
import { growingLru } from '../../../platform/cache/lru.ts';

/** The metric the API-request meter records: one unit per authorized org request. */
export const API_REQUESTS = 'api.requests';

/**
 * Billing's API-request meter: every authorized org request is counted in memory (the app's hook calls
 * `admit`) and flushed per interval as ONE usage event per org, keyed by the flush batch
 * (`api.requests:<instance>:<sequence>`): the ledger's (org, key) dedupe makes a retried flush count once,
 * even when its first attempt committed and only the reply was lost.
 * Lost on a crash: the requests of the last interval (`apiMeterFlushMs`, default 10 s) not yet flushed.
 */
export interface ApiMeter {
  /**
   * Before the handler: refuses the request (402 BILLING.QUOTA_EXCEEDED) over a hard `api.requests` quota, else
   * counts it. Synchronous (throws or returns nothing) when the snapshot and usage are cached here; else a promise.
   */
  admit(orgId: string): Promise<void> | void;
  flush(): Promise<number>;
  start(): void;
  stop(): Promise<void>;
}

export interface QuotaUseCases {
  /**
   * Throws 402 BILLING.QUOTA_EXCEEDED when the org's plan has a **hard** quota on `metric` and `adding` more
   * would exceed it in the current period. Cheap: the entitlement snapshot and the period's usage are
   * cached per org (usage re-read from the rollups at most every `quotaRefreshMs`, plus this process's
   * unflushed API requests), so the common case costs no database round trip.
   */
  assertQuota(orgId: string, metric: string, adding?: number): Promise<void>;
  apiMeter: ApiMeter;
}

interface UsageState {
  used: number;
  periodEnd: Date | null;
  at: number;
  /**
   * Actions this process admitted against the quota since `used` was read (metered later, from their events):
   * counted so a burst cannot outrun the ledger. Gone at the next read, so the bound on overshoot is what the
   * instances admit while their events are still unmetered (the outbox's lag), not `refreshMs`.
   */
  admitted: number;
}

export function quotaUseCases(c: BillingContext, ents: Pick<EntitlementUseCases, 'entitlements' | 'cachedEntitlements'>, usage: Pick<UsageUseCases, 'recordMeteredUsage'>): QuotaUseCases {
  const { scope } = c;
  const refreshMs = c.deps.config.quotaRefreshMs ?? 5_000;
  const states = growingLru<string, UsageState>({ entries: 50_000 });
  const loading = new Map<string, Promise<UsageState>>();

  const counter = createIntervalCounter({
    fields: ['requests'] as const,
    write: async (batch: CounterBatch<'requests'>) => {
      let failure: unknown;
      for (const [orgId, { requests }] of batch.counts) {
        try {
          await usage.recordMeteredUsage(tenantCtx(systemActor('billing.api_meter'), orgId), { key: `${API_REQUESTS}:${batch.id}`, metric: API_REQUESTS, value: requests });
          states.delete(`${orgId}\t${API_REQUESTS}`);
        } catch (err) {
          failure ??= err;
        }
      }
      // The whole batch is written again next time: the orgs already written are deduplicated by the key.
      if (failure) throw failure;
    },
  });

  async function load(orgId: string, metric: string): Promise<UsageState> {
    return scope.withTenant(orgId, async (trx) => {
      const sub = await subs.findLiveSubscription(trx, orgId);
      let start: Date;
      let end: Date | null = null;
      if (sub) {
        start = sub.currentPeriodStart;
        end = sub.currentPeriodEnd;
      } else {
        const { now } = await c.clockNow(trx, orgId);
        start = new Date(Date.UTC(now.getUTCFullYear(), now.getUTCMonth(), 1));
        end = new Date(Date.UTC(now.getUTCFullYear(), now.getUTCMonth() + 1, 1));
      }
      // Rollups are hourly: the period counts from the hour it starts in (as the threshold events do).
      const from = new Date(Math.floor(start.getTime() / 3_600_000) * 3_600_000);
      const totals = await usageSince(trx, orgId, [metric], from);
      return { used: totals.get(metric)?.sum ?? 0, periodEnd: end, at: Date.now(), admitted: 0 };
    });
  }

  function freshState(key: string): UsageState | undefined {
    const hit = states.get(key);
    return hit && Date.now() - hit.at < refreshMs ? hit : undefined;
  }

  async function used(orgId: string, metric: string): Promise<UsageState> {
    const key = `${orgId}\t${metric}`;
    const hit = freshState(key);
    if (hit) return hit;
    // One load per org and metric at a time, however many requests ask at once.
    let p = loading.get(key);
    if (!p) {
      p = load(orgId, metric).finally(() => loading.delete(key));
      loading.set(key, p);
    }
    const state = await p;
    states.set(key, state);
    return state;
  }

  const isHard = (snapshot: EntitlementSnapshot, metric: string) => snapshot.quotas[metric] !== undefined && snapshot.enforcement?.[metric] === 'hard';

  /** The check of a hard quota against the period's usage: throws the 402, or counts what it admits. */
  function enforce(orgId: string, metric: string, adding: number, snapshot: EntitlementSnapshot, state: UsageState): void {
    const quota = snapshot.quotas[metric]!;
    const local = metric === API_REQUESTS ? (counter.pending(orgId)?.requests ?? 0) : state.admitted;
    const current = state.used + local;
    if (current + adding > quota) {
      throw quotaExceeded({ metric, quota, usage: current, plan: snapshot.plan?.name ?? null, periodEnd: state.periodEnd?.toISOString() ?? null });
    }
    if (metric !== API_REQUESTS) state.admitted += adding;
  }

  async function assertQuota(orgId: string, metric: string, adding = 1): Promise<void> {
    const snapshot = await ents.entitlements(orgId);
    if (isHard(snapshot, metric)) enforce(orgId, metric, adding, snapshot, await used(orgId, metric));
  }

  /** assertQuota without a promise when the snapshot (and a hard quota's usage) is cached here — every request asks. */
  function assertQuotaNow(orgId: string, metric: string): Promise<void> | void {
    const snapshot = ents.cachedEntitlements(orgId);
    if (!snapshot) return assertQuota(orgId, metric);
    if (!isHard(snapshot, metric)) return;
    const state = freshState(`${orgId}\t${metric}`);
    if (!state) return assertQuota(orgId, metric);
    enforce(orgId, metric, 1, snapshot, state);
  }

  return {
    assertQuota,
    apiMeter: {
      admit(orgId) {
        const pending = assertQuotaNow(orgId, API_REQUESTS);
        if (pending) return pending.then(() => counter.add(orgId, { requests: 1 }));
        counter.add(orgId, { requests: 1 });
      },
      flush: () => counter.flush(),
      start() {
        const ms = c.deps.config.apiMeterFlushMs ?? 10_000;
        if (ms > 0) counter.start(ms);
      },
      stop: () => counter.stop(),
    },
  };
}
