import client from 'prom-client';
import { sql } from 'kysely';
import type { Database } from '../db/database.ts';
import { TABLE_PLACEMENT } from '../db/distribution.ts';
import { registry } from './metrics.ts';
import type { Sums } from './tenant-cost-meter.ts';

/**
 * Cost attribution per organization. Per-org Prometheus labels would explode cardinality, so each process
 * adds up requests, request time, database time (inside the org's tenant transactions) and jobs per org
 * in memory, flushes the sums per day to `tenant_costs` every `flushMs`, and exports only the current top
 * organizations as a gauge. Storage per org is measured by a daily schedule. Operators read it all with
 * `GET /v1/admin/tenant-costs`.
 */
const TOP_N = 10;
const topGauge = new client.Gauge({
  name: 'plinth_tenant_cost_top',
  help: `Today's most expensive organizations (top ${TOP_N} per resource, from tenant_costs): requests, request/db/job milliseconds, jobs`,
  labelNames: ['org', 'resource'] as const,
  registers: [registry],
});

export interface TenantCostRow {
  orgId: string;
  requests: number;
  requestMs: number;
  dbMs: number;
  jobs: number;
  jobMs: number;
  storageBytes: number | null;
}

export const COST_ORDER = { requests: 'requests', requestMs: 'request_ms', dbMs: 'db_ms', jobs: 'jobs', jobMs: 'job_ms', storageBytes: 'storage_bytes' } as const;

export function createTenantCosts(deps: { db: Database; flushMs?: number }) {
  const db = deps.db.scope('tenant_costs');

  async function write(batch: Map<string, Sums>): Promise<void> {
    const rows = [...batch].map(([org, s]) => ({
      org_id: org,
      day: sql<Date>`current_date`,
      requests: s.requests,
      request_ms: s.requestMs,
      db_ms: s.dbMs,
      jobs: s.jobs,
      job_ms: s.jobMs,
    }));
    await db.app
      .insertInto('tenant_costs')
      .values(rows)
      .onConflict((oc) =>
        oc.columns(['org_id', 'day']).doUpdateSet({
          requests: sql`tenant_costs.requests + excluded.requests`,
          request_ms: sql`tenant_costs.request_ms + excluded.request_ms`,
          db_ms: sql`tenant_costs.db_ms + excluded.db_ms`,
          jobs: sql`tenant_costs.jobs + excluded.jobs`,
          job_ms: sql`tenant_costs.job_ms + excluded.job_ms`,
        }),
      )
      .execute();
  }

  // The shared interval counter keeps a batch a failed write could not take, for the next flush.
  async function flush(): Promise<void> {
    if ((await deps.db.costs.flush(write)) > 0) await refreshTop();
  }

  async function top(opts: { days: number; by: keyof typeof COST_ORDER; limit: number }): Promise<TenantCostRow[]> {
    const column = COST_ORDER[opts.by];
    const rows = await db.app
      .selectFrom('tenant_costs')
      .select([
        'org_id',
        sql<string>`sum(requests)`.as('requests'),
        sql<number>`sum(request_ms)`.as('request_ms'),
        sql<number>`sum(db_ms)`.as('db_ms'),
        sql<string>`sum(jobs)`.as('jobs'),
        sql<number>`sum(job_ms)`.as('job_ms'),
        // Storage is a level, not a flow: the latest measurement in the window.
        sql<string | null>`(array_agg(storage_bytes order by day desc) filter (where storage_bytes is not null))[1]`.as('storage_bytes'),
      ])
      .where('day', '>', sql<Date>`current_date - ${opts.days}::int`)
      .groupBy('org_id')
      .orderBy(sql.raw(column === 'storage_bytes' ? 'storage_bytes' : `sum(${column})`), (ob) => ob.desc().nullsLast())
      .limit(opts.limit)
      .execute();
    return rows.map((r) => ({
      orgId: r.org_id,
      requests: Number(r.requests),
      requestMs: Math.round(Number(r.request_ms)),
      dbMs: Math.round(Number(r.db_ms)),
      jobs: Number(r.jobs),
      jobMs: Math.round(Number(r.job_ms)),
      storageBytes: r.storage_bytes === null ? null : Number(r.storage_bytes),
    }));
  }

  async function refreshTop(): Promise<void> {
    topGauge.reset();
    for (const by of ['requests', 'dbMs', 'jobMs'] as const) {
      for (const r of await top({ days: 1, by, limit: TOP_N })) topGauge.set({ org: r.orgId, resource: by }, r[by]);
    }
  }

  /** Bytes of each org's rows in every distributed table (pg_column_size), recorded for today. */
  async function measureStorage(): Promise<number> {
    const tables = Object.entries(TABLE_PLACEMENT).filter(([, p]) => p === 'distributed').map(([t]) => t);
    const union = sql.join(tables.map((t) => sql`select tenant_id, sum(pg_column_size(x.*))::bigint as bytes from ${sql.table(t)} x group by tenant_id`), sql` union all `);
    const res = await sql<{ tenant_id: string; bytes: string }>`select tenant_id, sum(bytes)::bigint as bytes from (${union}) s group by tenant_id`.execute(deps.db.owner);
    for (const r of res.rows) {
      await db.app
        .insertInto('tenant_costs')
        .values({ org_id: r.tenant_id, day: sql<Date>`current_date`, storage_bytes: Number(r.bytes) })
        .onConflict((oc) => oc.columns(['org_id', 'day']).doUpdateSet({ storage_bytes: Number(r.bytes) }))
        .execute();
    }
    return res.rows.length;
  }

  const timer = setInterval(() => void flush().catch(() => {}), deps.flushMs ?? 30_000);
  timer.unref();
  return {
    flush,
    top,
    measureStorage,
    async close() {
      clearInterval(timer);
      await flush().catch(() => {});
    },
  };
}

export type TenantCosts = ReturnType<typeof createTenantCosts>;
