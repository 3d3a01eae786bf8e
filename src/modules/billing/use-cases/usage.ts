import type { TxHandle } from '../../../platform/db/database.ts';
import type { TenantActorContext } from '../../../platform/http/actor.ts';
import { usageBatchTooLarge } from '../billing.errors.ts';
import { BILLING_EVENTS, type UsageThresholdPayload } from '../billing.events.ts';
import * as catalog from '../billing.repo.ts';
import type { Meter, Trx } from '../billing.repo.ts';
import * as subs from '../subscriptions.repo.ts';
import { insertUsage, lockUsageMetrics, queryUsage, usageSince, type Aggregation, type Granularity, type UsageEventInput, type UsagePoint } from '../usage.repo.ts';
import type { BillingContext } from './context.ts';
import type { EntitlementSnapshot, EntitlementUseCases } from './entitlements.ts';

export const MAX_USAGE_BATCH = 1000;
/** Events stamped further ahead than this (clock skew) are rejected. */
const MAX_FUTURE_MS = 5 * 60_000;
const METERS_TTL_MS = 30_000;
const THRESHOLDS = [80, 100];

export interface UsageEventIn {
  key: string;
  metric: string;
  /** ISO 8601; default: now. */
  timestamp?: string;
  /** Default 1. */
  value?: number;
  properties?: Record<string, unknown>;
}

export interface IngestResult {
  accepted: number;
  duplicates: number;
  rejected: Array<{ index: number; key: string; code: 'BILLING.USAGE_TOO_LATE' | 'BILLING.USAGE_IN_FUTURE' | 'BILLING.USAGE_BAD_VALUE'; detail: string }>;
}

export interface UsageQuery {
  metric: string;
  from: Date;
  to: Date;
  groupBy: Granularity;
  aggregation?: Aggregation;
}

export interface UsageUseCases {
  ingest(ctx: TenantActorContext, events: UsageEventIn[]): Promise<IngestResult>;
  usage(orgId: string, q: UsageQuery): Promise<{ metric: string; aggregation: Aggregation; data: UsagePoint[] }>;
  /** Usage measured by the product itself (event handlers), in the caller's transaction (tenant context set). */
  recordProductUsage(trx: TxHandle, orgId: string, events: UsageEventInput[]): Promise<number>;
  /**
   * One aggregated usage event measured by the platform (the API-request meter's flush), stamped at the
   * org's clock, idempotent by `key`, with the quota thresholds it crosses. Returns whether it was new.
   */
  recordMeteredUsage(ctx: TenantActorContext, event: { key: string; metric: string; value: number }): Promise<boolean>;
}

const hourFloor = (d: Date) => new Date(Math.floor(d.getTime() / 3_600_000) * 3_600_000);

export function usageUseCases(c: BillingContext, ents: Pick<EntitlementUseCases, 'entitlements'>): UsageUseCases {
  const { scope } = c;

  /** Quotas: a crossing of 80 % / 100 % in this period commits with the events that crossed it. */
  async function publishThresholds(trx: Trx, ctx: TenantActorContext, snapshot: EntitlementSnapshot, valid: UsageEventInput[], inserted: string[], now: Date): Promise<void> {
    const quotaMetrics = [...new Set(valid.map((e) => e.metric))].filter((m) => snapshot.quotas[m] !== undefined);
    if (inserted.length === 0 || quotaMetrics.length === 0) return;
    await lockUsageMetrics(trx, ctx.tenantId, quotaMetrics);
    const sub = await subs.findLiveSubscription(trx, ctx.tenantId);
    const periodStart = hourFloor(sub?.currentPeriodStart ?? new Date(Date.UTC(now.getUTCFullYear(), now.getUTCMonth(), 1)));
    const totals = await usageSince(trx, ctx.tenantId, quotaMetrics, periodStart);
    const added = new Map<string, number>();
    const insertedKeys = new Set(inserted);
    for (const e of valid) if (insertedKeys.has(e.key) && e.timestamp >= periodStart) added.set(e.metric, (added.get(e.metric) ?? 0) + e.value);
    for (const metric of quotaMetrics) {
      const quota = snapshot.quotas[metric]!;
      const after = totals.get(metric)?.sum ?? 0;
      const before = after - (added.get(metric) ?? 0);
      for (const threshold of THRESHOLDS) {
        const mark = (quota * threshold) / 100;
        if (before < mark && after >= mark) {
          const payload: UsageThresholdPayload = { metric, threshold, usage: after, quota, periodStart: periodStart.toISOString() };
          await c.publish(trx, ctx, BILLING_EVENTS.usageThresholdCrossed, payload);
        }
      }
    }
  }
  let meters: { at: number; list: Meter[] } | undefined;
  async function meterList(): Promise<Meter[]> {
    if (!meters || Date.now() - meters.at > METERS_TTL_MS) meters = { at: Date.now(), list: await catalog.listMeters(scope.app) };
    return meters.list;
  }

  return {
    async ingest(ctx, events) {
      if (events.length > MAX_USAGE_BATCH) throw usageBatchTooLarge(MAX_USAGE_BATCH);
      const [meterDefs, snapshot] = await Promise.all([meterList(), ents.entitlements(ctx.tenantId)]);
      const uniques = meterDefs.filter((m) => m.aggregation === 'unique_count' && m.property).map((m) => ({ metric: m.key, property: m.property! }));
      return scope.withTenant(ctx.tenantId, async (trx) => {
        const { now } = await c.clockNow(trx, ctx.tenantId);
        const oldest = now.getTime() - c.deps.config.usageLateWindowMs;
        const result: IngestResult = { accepted: 0, duplicates: 0, rejected: [] };
        const valid: UsageEventInput[] = [];
        const seen = new Set<string>();
        events.forEach((e, index) => {
          const timestamp = e.timestamp === undefined ? now : new Date(e.timestamp);
          const value = e.value ?? 1;
          if (!Number.isFinite(value)) result.rejected.push({ index, key: e.key, code: 'BILLING.USAGE_BAD_VALUE', detail: 'value must be a finite number' });
          else if (timestamp.getTime() < oldest) result.rejected.push({ index, key: e.key, code: 'BILLING.USAGE_TOO_LATE', detail: `older than the late window (${c.deps.config.usageLateWindowMs / 3_600_000} h)` });
          else if (timestamp.getTime() > now.getTime() + MAX_FUTURE_MS) result.rejected.push({ index, key: e.key, code: 'BILLING.USAGE_IN_FUTURE', detail: 'timestamp is in the future' });
          else if (seen.has(e.key)) result.duplicates++;
          else {
            seen.add(e.key);
            valid.push({ key: e.key, metric: e.metric, timestamp, value, properties: e.properties ?? {} });
          }
        });
        const inserted = await insertUsage(trx, ctx.tenantId, valid, uniques);
        result.accepted = inserted.length;
        result.duplicates += valid.length - inserted.length;
        await publishThresholds(trx, ctx, snapshot, valid, inserted, now);
        return result;
      });
    },

    async recordProductUsage(trx, orgId, events) {
      // Meters read in this transaction: a handler must not wait for a second connection (one on PGlite).
      const tx = scope.join(trx);
      const uniques = (await catalog.listMeters(tx)).filter((m) => m.aggregation === 'unique_count' && m.property).map((m) => ({ metric: m.key, property: m.property! }));
      return (await insertUsage(tx, orgId, events, uniques)).length;
    },

    async recordMeteredUsage(ctx, event) {
      const snapshot = await ents.entitlements(ctx.tenantId);
      return scope.withTenant(ctx.tenantId, async (trx) => {
        const { now } = await c.clockNow(trx, ctx.tenantId);
        const valid: UsageEventInput[] = [{ ...event, timestamp: now, properties: {} }];
        const inserted = await insertUsage(trx, ctx.tenantId, valid, []);
        await publishThresholds(trx, ctx, snapshot, valid, inserted, now);
        return inserted.length > 0;
      });
    },

    async usage(orgId, q) {
      const meter = (await meterList()).find((m) => m.key === q.metric);
      const aggregation = q.aggregation ?? meter?.aggregation ?? 'sum';
      const data = await scope.withTenantRead(orgId, (trx) => queryUsage(trx, orgId, { ...q, aggregation }));
      return { metric: q.metric, aggregation, data };
    },
  };
}
