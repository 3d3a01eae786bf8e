import { sql } from 'kysely';
import type { Database } from '../db/database.ts';
import { AppError } from '../http/errors.ts';
import { deadFromRow, type DeadJob, type DeliveryRow } from './deliveries.ts';
import { toEnvelope } from './publisher.ts';
import type { DeliveryJob } from './transport.ts';

const COLUMNS = ['id', 'event_id', 'event_name', 'consumer', 'tenant_id', 'attempts', 'max_attempts', 'last_error', 'updated_at'] as const;

/** Dead-lettered deliveries, oldest first, keyset-paged by delivery id. */
export async function listDead(db: Database, { limit, after }: { limit: number; after?: string }): Promise<{ data: DeadJob[]; nextCursor: string | null }> {
  let q = db.app.selectFrom('job_deliveries').select(COLUMNS).where('status', '=', 'dead').orderBy('id').limit(limit + 1);
  if (after) q = q.where('id', '>', after);
  const rows = await q.execute();
  const page = rows.slice(0, limit).map(deadFromRow);
  return { data: page, nextCursor: rows.length > limit ? page[page.length - 1]!.id : null };
}

/**
 * Sends one dead delivery back for processing with a fresh attempt count. With `dispatch` (a running
 * worker) it is queued now; otherwise any worker's sweeper picks it up (available_at is in the past).
 */
export async function redrive(db: Database, deliveryId: string, dispatch?: (jobs: DeliveryJob[]) => Promise<void>): Promise<DeadJob> {
  const { rows } = await sql<DeliveryRow>`
    update job_deliveries set status = 'pending', attempts = 0, available_at = to_timestamp(0), updated_at = now()
    where id = ${deliveryId} and status = 'dead'
    returning ${sql.join(COLUMNS.map((c) => sql.ref(c)))}`.execute(db.app);
  const row = rows[0];
  if (!row) {
    const exists = await db.app.selectFrom('job_deliveries').select('status').where('id', '=', deliveryId).executeTakeFirst();
    if (!exists) throw new AppError('JOBS.NOT_FOUND', 404, 'No job with this id');
    throw new AppError('JOBS.NOT_DEAD', 409, `The job is ${exists.status}, not dead; only dead jobs can be redriven`);
  }
  if (dispatch) {
    const event = await db.app.selectFrom('outbox').selectAll().where('id', '=', row.event_id).executeTakeFirst();
    if (event) await dispatch([{ deliveryId: row.id, consumer: row.consumer, event: toEnvelope(event) }]);
  }
  return deadFromRow(row);
}
