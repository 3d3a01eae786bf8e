import { sql, type Kysely, type Selectable, type Transaction } from 'kysely';
import type { DB, DbScope } from '../../platform/db/database.ts';
import type { UploadState } from '../../platform/storage/index.ts';

export type ExportsTables = Pick<DB, 'reporting_exports' | 'reporting_export_jobs'>;
type Tx = Transaction<ExportsTables> | Kysely<ExportsTables>;
export type ExportRow = Selectable<DB['reporting_exports']>;

/** Where a resumable export stands: every row up to `after` (keyset cursor) is in the upload's parts. */
export interface ExportCheckpoint {
  after: string | null;
  rows: number;
  bytes: number;
  upload: UploadState;
}

export type ExportStatus = 'queued' | 'running' | 'succeeded' | 'failed' | 'cancelled' | 'expired';

export interface NewExport {
  tenantId: string;
  id: string;
  resource: string;
  format: 'csv' | 'ndjson';
  filters: Record<string, unknown>;
  requestedBy: string;
}

/** An advisory lock key: claims are serialized (they are rare and short), so the limits hold across workers. */
const CLAIM_LOCK = 0x7265_7078; // 'repx'

export function createExportsRepo(scope: DbScope<ExportsTables>) {
  return {
    scope,
    async insert(trx: Tx, e: NewExport): Promise<ExportRow> {
      const row = await trx
        .insertInto('reporting_exports')
        .values({
          tenant_id: e.tenantId,
          id: e.id,
          resource: e.resource,
          format: e.format,
          filters: JSON.stringify(e.filters),
          status: 'queued',
          requested_by: e.requestedBy,
        })
        .returningAll()
        .executeTakeFirstOrThrow();
      await trx.insertInto('reporting_export_jobs').values({ export_id: e.id, tenant_id: e.tenantId, state: 'queued' }).execute();
      return row;
    },
    find(trx: Tx, tenantId: string, id: string): Promise<ExportRow | undefined> {
      return trx.selectFrom('reporting_exports').selectAll().where('tenant_id', '=', tenantId).where('id', '=', id).executeTakeFirst();
    },
    list(trx: Tx, tenantId: string, limit: number, before?: string): Promise<ExportRow[]> {
      let q = trx.selectFrom('reporting_exports').selectAll().where('tenant_id', '=', tenantId);
      if (before) q = q.where('id', '<', before);
      return q.orderBy('id', 'desc').limit(limit).execute();
    },
    /** queued/running → cancelled (the runner notices at its next batch); returns the row after. */
    async cancel(trx: Tx, tenantId: string, id: string): Promise<ExportRow | undefined> {
      const row = await trx
        .updateTable('reporting_exports')
        .set({ status: 'cancelled', finished_at: new Date(), updated_at: new Date() })
        .where('tenant_id', '=', tenantId)
        .where('id', '=', id)
        .where('status', 'in', ['queued', 'running'])
        .returningAll()
        .executeTakeFirst();
      if (row) await trx.deleteFrom('reporting_export_jobs').where('export_id', '=', id).where('state', '=', 'queued').execute();
      return row;
    },
    /** succeeded → expired, file forgotten (the caller deletes it). */
    async expire(trx: Tx, tenantId: string, id: string): Promise<ExportRow | undefined> {
      const row = await trx
        .updateTable('reporting_exports')
        .set({ status: 'expired', storage_key: null, updated_at: new Date() })
        .where('tenant_id', '=', tenantId)
        .where('id', '=', id)
        .where('status', '=', 'succeeded')
        .returningAll()
        .executeTakeFirst();
      await trx.deleteFrom('reporting_export_jobs').where('export_id', '=', id).execute();
      return row;
    },

    // --- the runner (across tenants, on the platform queue table) ---

    /**
     * Claims the oldest runnable job: queued, or running with an expired lease (its worker died). At most one
     * running export per org and `globalLimit` overall; claims are serialized by an advisory lock.
     */
    async claim(globalLimit: number, leaseMs: number, held: string[] = []): Promise<{ exportId: string; tenantId: string; attempts: number } | undefined> {
      return scope.app.transaction().execute(async (trx) => {
        await sql`select pg_advisory_xact_lock(${CLAIM_LOCK})`.execute(trx);
        const { rows } = await sql<{ export_id: string; tenant_id: string; attempts: number }>`
          with busy as (
            select tenant_id from reporting_export_jobs where state = 'running' and lease_until > now()
          ), pick as (
            select export_id from reporting_export_jobs
            where (state = 'queued' or (state = 'running' and lease_until <= now()))
              and tenant_id not in (select tenant_id from busy)
              and (select count(*) from busy) < ${globalLimit}
              and export_id <> all(${held}::uuid[])
            order by queued_at, export_id
            limit 1
          )
          update reporting_export_jobs j
          set state = 'running', lease_until = now() + ${`${leaseMs} milliseconds`}::interval, attempts = j.attempts + 1
          from pick where j.export_id = pick.export_id
          returning j.export_id, j.tenant_id, j.attempts`.execute(trx);
        const r = rows[0];
        return r ? { exportId: r.export_id, tenantId: r.tenant_id, attempts: Number(r.attempts) } : undefined;
      });
    },
    /** Extends the lease of the claim `attempts` (not of a later claim by another worker). */
    async renewLease(trx: Tx, exportId: string, attempts: number, leaseMs: number): Promise<void> {
      await trx
        .updateTable('reporting_export_jobs')
        .set({ lease_until: sql`now() + ${`${leaseMs} milliseconds`}::interval` })
        .where('export_id', '=', exportId)
        .where('attempts', '=', attempts)
        .where('state', '=', 'running')
        .execute();
    },
    async releaseJob(exportId: string): Promise<void> {
      await scope.app.deleteFrom('reporting_export_jobs').where('export_id', '=', exportId).execute();
    },
    /** Hands a job back (shutdown): queued again, claimable at once. */
    async requeue(exportId: string): Promise<void> {
      await scope.app.updateTable('reporting_export_jobs').set({ state: 'queued', lease_until: null }).where('export_id', '=', exportId).execute();
    },
    /**
     * queued/running → running under this claim (`attempts` is the claim's fencing token). An export with a
     * checkpoint keeps its progress: its new worker continues from it.
     */
    async start(trx: Tx, tenantId: string, id: string, attempts: number, rowsTotal: number | null): Promise<ExportRow | undefined> {
      return trx
        .updateTable('reporting_exports')
        .set({
          status: 'running',
          started_at: sql`case when checkpoint is null then now() else started_at end`,
          updated_at: new Date(),
          attempts,
          rows_done: sql`coalesce((checkpoint->>'rows')::bigint, 0)`,
          rows_total: rowsTotal,
        })
        .where('tenant_id', '=', tenantId)
        .where('id', '=', id)
        .where('status', 'in', ['queued', 'running'])
        .returningAll()
        .executeTakeFirst();
    },
    /**
     * Progress, and the checkpoint when a part was uploaded. 'cancelled': the export is no longer running;
     * 'fenced': another worker claimed it since (this one was presumed dead) and owns the file now.
     */
    async progress(
      trx: Tx,
      tenantId: string,
      id: string,
      attempts: number,
      rowsDone: number,
      checkpoint?: ExportCheckpoint,
    ): Promise<'ok' | 'cancelled' | 'fenced'> {
      const r = await trx
        .updateTable('reporting_exports')
        .set({ rows_done: rowsDone, updated_at: new Date(), ...(checkpoint ? { checkpoint: JSON.stringify(checkpoint) } : {}) })
        .where('tenant_id', '=', tenantId)
        .where('id', '=', id)
        .where('status', '=', 'running')
        .where('attempts', '=', attempts)
        .returning('id')
        .executeTakeFirst();
      if (r) return 'ok';
      const now = await trx.selectFrom('reporting_exports').select(['status', 'attempts']).where('tenant_id', '=', tenantId).where('id', '=', id).executeTakeFirst();
      return now?.status === 'running' && now.attempts !== attempts ? 'fenced' : 'cancelled';
    },
    async succeed(
      trx: Tx,
      tenantId: string,
      id: string,
      done: { rows: number; bytes: number; storageKey: string; expiresAt: Date; attempts: number },
    ): Promise<ExportRow | undefined> {
      const row = await trx
        .updateTable('reporting_exports')
        .set({
          status: 'succeeded',
          checkpoint: null,
          rows_done: done.rows,
          rows_total: done.rows,
          bytes: done.bytes,
          storage_key: done.storageKey,
          expires_at: done.expiresAt,
          finished_at: new Date(),
          updated_at: new Date(),
        })
        .where('tenant_id', '=', tenantId)
        .where('id', '=', id)
        .where('status', '=', 'running')
        .where('attempts', '=', done.attempts)
        .returningAll()
        .executeTakeFirst();
      if (row) {
        await trx
          .updateTable('reporting_export_jobs')
          .set({ state: 'done', lease_until: null, expires_at: done.expiresAt, storage_key: done.storageKey })
          .where('export_id', '=', id)
          .execute();
      }
      return row;
    },
    /** running → failed; with `attempts`, only while that claim still owns the export. */
    async fail(trx: Tx, tenantId: string, id: string, code: string, detail: string, attempts?: number): Promise<void> {
      let q = trx
        .updateTable('reporting_exports')
        .set({ status: 'failed', error_code: code, error_detail: detail, checkpoint: null, finished_at: new Date(), updated_at: new Date() })
        .where('tenant_id', '=', tenantId)
        .where('id', '=', id)
        .where('status', '=', 'running');
      if (attempts !== undefined) q = q.where('attempts', '=', attempts);
      const r = await q.executeTakeFirst();
      if (attempts !== undefined && Number(r.numUpdatedRows) === 0) return;
      await trx.deleteFrom('reporting_export_jobs').where('export_id', '=', id).execute();
    },
    /** Finished exports whose retention ended, across tenants (ids and keys only). */
    expired(limit: number): Promise<Array<{ export_id: string; tenant_id: string; storage_key: string | null }>> {
      return scope.app
        .selectFrom('reporting_export_jobs')
        .select(['export_id', 'tenant_id', 'storage_key'])
        .where('state', '=', 'done')
        .where('expires_at', '<', new Date())
        .orderBy('expires_at')
        .limit(limit)
        .execute();
    },
  };
}

export type ExportsRepo = ReturnType<typeof createExportsRepo>;
