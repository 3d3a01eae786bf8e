import { sql } from 'kysely';
import type { Database } from '../db/database.ts';
import { newId } from '../ids.ts';
import { BATCH } from './deliveries.ts';
import { toEnvelope, type OutboxRow } from './publisher.ts';
import type { Registry } from './registry.ts';
import type { DeliveryJob } from './transport.ts';

/**
 * Claims a batch of committed, unrelayed events (FOR UPDATE SKIP LOCKED, so several relays never take the
 * same row), records one delivery per subscribed consumer in the same transaction, marks the events
 * relayed, then hands the new deliveries to the transport. Returns how many events it relayed.
 */
export async function relayOnce(db: Database, registry: Registry, dispatch: (jobs: DeliveryJob[]) => Promise<void>): Promise<number> {
  const { events, jobs } = await db.app.transaction().execute(async (trx) => {
    const { rows } = await sql<OutboxRow>`
      select id, tenant_id, name, payload, request_id, traceparent, occurred_at
      from outbox where relayed_at is null
      order by id limit ${BATCH}
      for update skip locked`.execute(trx);
    if (rows.length === 0) return { events: [], jobs: [] };
    const events = rows.map(toEnvelope);
    const deliveries = events.flatMap((event) =>
      (registry.byName.get(event.name) ?? []).map((sub) => ({
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
    await trx.updateTable('outbox').set({ relayed_at: sql`now()` }).where('id', 'in', rows.map((r) => r.id)).execute();
    return { events, jobs };
  });
  await dispatch(jobs);
  return events.length;
}
