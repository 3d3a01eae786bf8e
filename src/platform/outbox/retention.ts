import { sql } from 'kysely';
import type { ScheduleContext } from './registry.ts';

/** How long processed-event records (the idempotency window) and settled events are kept. */
export const RETENTION_DAYS = 7;

/** Nightly: processed-event records and settled deliveries/events past retention. */
export async function cleanupJobRecords({ db, logger }: ScheduleContext): Promise<void> {
  const cutoff = sql<Date>`now() - interval '1 day' * ${RETENTION_DAYS}`;
  const processed = await db.app.deleteFrom('processed_events').where('processed_at', '<', cutoff).executeTakeFirst();
  const events = await sql`
    delete from outbox o where o.relayed_at < ${cutoff}
    and not exists (select 1 from job_deliveries d where d.event_id = o.id and d.status <> 'done')`.execute(db.app);
  logger.info({ processedEvents: Number(processed.numDeletedRows), events: Number(events.numAffectedRows ?? 0) }, 'job records cleaned up');
}
