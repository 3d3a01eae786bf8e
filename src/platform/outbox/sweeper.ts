import { sql } from 'kysely';
import type { Logger } from 'pino';
import type { Database } from '../db/database.ts';
import { BATCH, ms } from './deliveries.ts';
import { toEnvelope, type OutboxRow } from './publisher.ts';
import type { DeliveryJob } from './transport.ts';

/**
 * Redis is not the system of record: a delivery still pending `olderThanMs` after it became available was
 * lost or stalled on its way, so it is dispatched again (the processor's claim makes a duplicate harmless).
 */
export async function sweepOnce(
  db: Database,
  log: Logger,
  dispatch: (jobs: DeliveryJob[]) => Promise<void>,
  olderThanMs: number,
): Promise<number> {
  const { rows } = await sql<OutboxRow & { delivery_id: string; consumer: string }>`
    with due as (
      select id from job_deliveries
      where status = 'pending' and available_at < now() - ${ms(olderThanMs)}
      order by available_at limit ${BATCH * 5}
      for update skip locked)
    update job_deliveries d set available_at = now(), updated_at = now()
    from due, outbox o
    where d.id = due.id and o.id = d.event_id
    returning d.id as delivery_id, d.consumer, o.id, o.tenant_id, o.name, o.payload, o.request_id, o.traceparent, o.occurred_at`.execute(db.app);
  if (rows.length > 0) log.info({ deliveries: rows.length }, 'sweeper re-dispatching deliveries that were not processed in time');
  await dispatch(rows.map((r) => ({ deliveryId: r.delivery_id, consumer: r.consumer, event: toEnvelope(r) })));
  return rows.length;
}
