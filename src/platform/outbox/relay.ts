import { sql } from 'kysely';
import type { Database } from '../db/database.ts';
import { newId } from '../ids.ts';
import { CONSUMERS_LOCK } from './consumers.ts';
import { BATCH, ms } from './deliveries.ts';
import { toEnvelope, type OutboxRow } from './publisher.ts';
import type { Registry } from './registry.ts';
import type { DeliveryJob } from './transport.ts';

/**
 * Claims a batch of committed, unrelayed events and marks them relayed (one statement, FOR UPDATE SKIP
 * LOCKED, so several relays never take the same row), records one delivery per consumer with one insert in
 * the same transaction, then hands the new deliveries to the transport (one batch job per consumer).
 * Returns how many events it relayed.
 *
 * The consumers are those in `job_consumers` (declared by every worker version that ever started, see
 * consumers.ts) plus this process's own: an old worker relaying beside a new one still fans out to the
 * new one's consumers, and a process that relays before its worker started still serves its own.
 */
export async function relayOnce(
  db: Database,
  registry: Registry,
  dispatch: (jobs: DeliveryJob[]) => Promise<void>,
  retireMs: number,
): Promise<number> {
  const { events, jobs } = await db.app.transaction().execute(async (trx) => {
    // Claimed and marked relayed in one statement; the mark commits only with the deliveries below.
    const { rows } = await sql<OutboxRow>`
      with claimed as (
        select id from outbox where relayed_at is null
        order by id limit ${BATCH}
        for update skip locked)
      update outbox o set relayed_at = now() from claimed where o.id = claimed.id
      returning o.id, o.tenant_id, o.name, o.payload, o.request_id, o.traceparent, o.occurred_at`.execute(trx);
    if (rows.length === 0) return { events: [], jobs: [] };
    // Oldest first (UUIDv7 ids sort by time), as they are dispatched and processed.
    const events = rows.map(toEnvelope).sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
    const names = [...new Set(events.map((e) => e.name))];
    // Shared with other relays, exclusive against a consumer's registration (see consumers.ts).
    await sql`select pg_advisory_xact_lock_shared(${CONSUMERS_LOCK})`.execute(trx);
    const declared = await trx
      .selectFrom('job_consumers')
      .select(['consumer', 'event_name as eventName', 'max_attempts as maxAttempts'])
      .where('event_name', 'in', names)
      // A consumer no running worker has declared for this long was removed from the code: no new deliveries.
      .where('last_seen_at', '>', sql<Date>`now() - ${ms(retireMs)}`)
      .execute();
    const consumersOf = new Map<string, Map<string, { consumer: string; maxAttempts: number }>>();
    for (const c of [...declared, ...names.flatMap((n) => registry.byName.get(n) ?? [])]) {
      const forName = consumersOf.get(c.eventName) ?? new Map();
      forName.set(c.consumer, { consumer: c.consumer, maxAttempts: c.maxAttempts });
      consumersOf.set(c.eventName, forName);
    }
    const deliveries = events.flatMap((event) =>
      [...(consumersOf.get(event.name)?.values() ?? [])].map((sub) => ({
        id: newId(),
        event_id: event.id,
        consumer: sub.consumer,
        tenant_id: event.tenantId,
        event_name: event.name,
        max_attempts: sub.maxAttempts,
      })),
    );
    let jobs: DeliveryJob[] = [];
    if (deliveries.length > 0) {
      const inserted = await trx
        .insertInto('job_deliveries')
        .values(deliveries)
        .onConflict((oc) => oc.columns(['event_id', 'consumer']).doNothing())
        .returning(['id', 'event_id', 'consumer'])
        .execute();
      const eventsById = new Map(events.map((e) => [e.id, e]));
      jobs = inserted.map((r) => ({ deliveryId: r.id, consumer: r.consumer, event: eventsById.get(r.event_id)! }));
    }
    return { events, jobs };
  });
  await dispatch(jobs);
  return events.length;
}
