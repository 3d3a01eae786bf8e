import { sql, type CompiledQuery } from 'kysely';
import type { DbScope, StatementOptions } from '../../platform/db/database.ts';
import type { BillingTables, Trx } from './billing.repo.ts';

export interface UsageEventInput {
  key: string;
  metric: string;
  timestamp: Date;
  value: number;
  properties: Record<string, unknown>;
}

export type Meters = Array<{ metric: string; property: string }>;

/** One org's events for `billing_usage_ingest`. */
export interface UsageGroup {
  tenantId: string;
  events: UsageEventInput[];
}

/**
 * Writes one org's events in the caller's transaction (its tenant context set) through
 * `billing_usage_ingest` (migration 0159): the primary key (tenant_id, key) is the dedupe record (a duplicate
 * is skipped), and only the rows actually inserted are folded into the hourly rollups and the distinct-value
 * sets, so claim, event and rollup commit together or not at all: a failed write retried with the same keys
 * counts each event exactly once. Returns the keys that were new.
 */
export async function insertUsage(trx: Trx, tenantId: string, events: UsageEventInput[], uniques: Meters): Promise<string[]> {
  if (events.length === 0) return [];
  return (await trx.executeQuery(ingestQuery(trx, [{ tenantId, events }], uniques))).rows.map((r) => r.key);
}

/**
 * Several orgs' events in one statement, its own transaction (one round trip, one commit): each org's rows
 * are written in that org's tenant context, set by the function (RLS binds them to it). All commit or none.
 * Returns the keys that were new, per org.
 */
export async function insertUsageGroups(scope: DbScope<BillingTables>, groups: UsageGroup[], uniques: Meters, opts?: StatementOptions): Promise<Map<string, string[]>> {
  const out = new Map<string, string[]>(groups.map((g) => [g.tenantId, []]));
  if (groups.every((g) => g.events.length === 0)) return out;
  for (const r of await scope.withStatement(ingestQuery(scope.app, groups, uniques), opts)) out.get(r.tenant_id)?.push(r.key);
  return out;
}

/**
 * The events travel as ONE json parameter (one JSON.stringify of the batch): text arrays would cost the
 * driver an escaping pass over every element — the properties' JSON a second time — per event.
 */
function ingestQuery(db: Pick<Trx, 'getExecutor'>, groups: UsageGroup[], uniques: Meters): CompiledQuery<{ tenant_id: string; key: string }> {
  const input = JSON.stringify(groups.map((g) => ({ t: g.tenantId, e: g.events.map((e) => ({ k: e.key, m: e.metric, t: e.timestamp.toISOString(), v: e.value, p: e.properties })) })));
  return sql<{ tenant_id: string; key: string }>`select tenant_id, key from billing_usage_ingest(${input}::json, ${JSON.stringify(uniques)}::json)`.compile(db);
}

export type Aggregation = 'count' | 'sum' | 'max' | 'unique_count' | 'latest' | 'time_weighted_sum';
export type Granularity = 'hour' | 'day' | 'month' | 'total';

export interface UsagePoint {
  start: Date;
  value: number;
}

/** Aggregates the rollups (never the raw events) of one metric over [from, to), grouped by UTC hour/day/month. */
export async function queryUsage(trx: Trx, tenantId: string, q: { metric: string; from: Date; to: Date; aggregation: Aggregation; groupBy: Granularity }): Promise<UsagePoint[]> {
  const group = q.groupBy === 'total' ? sql`${q.from}::timestamptz` : sql`date_trunc(${q.groupBy}, bucket, 'UTC')`;
  if (q.aggregation === 'time_weighted_sum') return timeWeighted(trx, tenantId, q);
  if (q.aggregation === 'unique_count') {
    const rows = await sql<{ start: Date; value: string }>`
      select ${group} as start, count(distinct value) as value from billing_usage_uniques
      where tenant_id = ${tenantId} and metric = ${q.metric} and bucket >= ${q.from} and bucket < ${q.to}
      group by 1 order by 1`.execute(trx);
    return rows.rows.map((r) => ({ start: new Date(r.start), value: Number(r.value) }));
  }
  const agg =
    q.aggregation === 'count'
      ? sql`sum(count)`
      : q.aggregation === 'sum'
        ? sql`sum(sum)`
        : q.aggregation === 'max'
          ? sql`max(max)`
          : sql`(array_agg(latest_value order by latest_at desc))[1]`;
  const rows = await sql<{ start: Date; value: string }>`
    select ${group} as start, ${agg} as value from billing_usage_rollups
    where tenant_id = ${tenantId} and metric = ${q.metric} and bucket >= ${q.from} and bucket < ${q.to}
    group by 1 order by 1`.execute(trx);
  return rows.rows.map((r) => ({ start: new Date(r.start), value: Number(r.value) }));
}

/**
 * Serializes, per (org, metric), the threshold check of transactions that have written usage: taken after
 * the insert and held to commit, so the next holder's `usageSince` sees every earlier holder's events and
 * each crossing is seen by exactly one transaction (without it, two batches writing different hourly
 * buckets both read the total without the other's events: a mark crossed twice, or never). Sorted: no deadlock.
 */
export async function lockUsageMetrics(trx: Trx, tenantId: string, metrics: string[]): Promise<void> {
  if (metrics.length === 0) return;
  const keys = [...metrics].sort().map((m) => `billing.usage:${tenantId}:${m}`);
  await sql`select pg_advisory_xact_lock(hashtextextended(k, 0)) from unnest(${keys}::text[]) with ordinality as t(k, i) order by i`.execute(trx);
}

/** Sum (or count) of several metrics since `from`, from the rollups: what quota checks compare. */
export async function usageSince(trx: Trx, tenantId: string, metrics: string[], from: Date): Promise<Map<string, { count: number; sum: number }>> {
  const out = new Map<string, { count: number; sum: number }>();
  if (metrics.length === 0) return out;
  const rows = await trx
    .selectFrom('billing_usage_rollups')
    .select(['metric', sql<string>`sum(count)`.as('count'), sql<string>`sum(sum)`.as('sum')])
    .where('tenant_id', '=', tenantId)
    .where('metric', 'in', metrics)
    .where('bucket', '>=', from)
    .groupBy('metric')
    .execute();
  for (const r of rows) out.set(r.metric, { count: Number(r.count), sum: Number(r.sum) });
  return out;
}

/**
 * Time-weighted sum (e.g. seat-hours, GB-hours): each event sets the metric's level from its timestamp
 * until the next event's; the level is integrated over [from, to) and per group, in value × hours.
 * Computed exactly (numeric arithmetic) from the raw ledger rather than the rollups: the level in force
 * at `from` is the last event before it, and the order is the events' timestamps (then keys, for ties),
 * so events that arrived out of order count where they belong.
 */
async function timeWeighted(trx: Trx, tenantId: string, q: { metric: string; from: Date; to: Date; groupBy: Granularity }): Promise<UsagePoint[]> {
  const unit = q.groupBy === 'total' ? null : q.groupBy;
  const groups = unit
    ? sql`select g as gs, g + ${`1 ${unit}`}::interval as ge from generate_series(date_trunc(${unit}, ${q.from}::timestamptz, 'UTC'), ${q.to}::timestamptz, ${`1 ${unit}`}::interval) g where g < ${q.to}::timestamptz`
    : sql`select ${q.from}::timestamptz as gs, ${q.to}::timestamptz as ge`;
  const rows = await sql<{ start: Date; value: string }>`
    with ev as (
      select occurred_at as t, key, value from billing_usage_events
      where tenant_id = ${tenantId} and metric = ${q.metric} and occurred_at < ${q.to}::timestamptz
        and occurred_at >= coalesce((select max(occurred_at) from billing_usage_events
                                     where tenant_id = ${tenantId} and metric = ${q.metric} and occurred_at <= ${q.from}::timestamptz), ${q.from}::timestamptz)
    ), seg as (
      select greatest(t, ${q.from}::timestamptz) as s, least(coalesce(lead(t) over (order by t, key), ${q.to}::timestamptz), ${q.to}::timestamptz) as e, value from ev
    ), grp as (${groups})
    select grp.gs as start, sum(seg.value * extract(epoch from (least(seg.e, grp.ge) - greatest(seg.s, grp.gs)))) / 3600 as value
    from seg join grp on seg.s < grp.ge and seg.e > grp.gs and seg.e > seg.s
    group by grp.gs order by grp.gs`.execute(trx);
  return rows.rows.map((r) => ({ start: new Date(r.start), value: Number(r.value) }));
}
