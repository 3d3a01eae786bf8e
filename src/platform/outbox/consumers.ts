import { sql } from 'kysely';
import type { Database } from '../db/database.ts';
import { newId } from '../ids.ts';
import { ms } from './deliveries.ts';
import { toEnvelope, type OutboxRow } from './publisher.ts';
import type { Registry } from './registry.ts';
import type { DeliveryJob } from './transport.ts';

/**
 * Records this process's consumers in `job_consumers`, the set every relay fans out to, whichever worker
 * version relays. A consumer seen for the first time also gets a delivery for each event of its name that
 * occurred within `backfillMs` (events a newer API emitted while only older workers were relaying).
 *
 * Registration and relays exclude each other on CONSUMERS_LOCK: a registration takes it exclusively for its
 * whole transaction, every relay shares it while it reads the list and fans out. So a relay either finished
 * before the registration (its events are relayed, and the backfill, which runs after, finds them) or starts
 * after it committed (and reads the list with the new consumer in it): no event falls between the two. The
 * (event, consumer) unique key absorbs any overlap.
 */
export const CONSUMERS_LOCK = 7_243_002;

export async function registerConsumers(db: Database, registry: Registry, backfillMs: number): Promise<DeliveryJob[]> {
  const subs = [...registry.byConsumer.values()];
  if (subs.length === 0) return [];
  return db.app.transaction().execute(async (trx) => {
    await sql`select pg_advisory_xact_lock(${CONSUMERS_LOCK})`.execute(trx);
    const fresh = await trx
      .insertInto('job_consumers')
      .values(subs.map((s) => ({ consumer: s.consumer, event_name: s.eventName, max_attempts: s.maxAttempts })))
      .onConflict((oc) =>
        oc.column('consumer').doUpdateSet((eb) => ({
          event_name: eb.ref('excluded.event_name'),
          max_attempts: eb.ref('excluded.max_attempts'),
          last_seen_at: sql`now()`,
        })),
      )
      // xmax = 0 only on a row this statement inserted: the consumers no worker had declared before.
      .returning(['consumer', 'event_name', 'max_attempts', sql<boolean>`xmax = 0`.as('inserted')])
      .execute();
    const created = fresh.filter((c) => c.inserted);
    if (created.length === 0 || backfillMs === 0) return [];
    const jobs: DeliveryJob[] = [];
    for (const c of created) {
      const { rows } = await sql<OutboxRow>`
        select o.id, o.tenant_id, o.name, o.payload, o.request_id, o.traceparent, o.occurred_at
        from outbox o
        where o.name = ${c.event_name} and o.occurred_at >= now() - ${ms(backfillMs)}
          and not exists (select 1 from job_deliveries d where d.event_id = o.id and d.consumer = ${c.consumer})
        order by o.id`.execute(trx);
      for (let i = 0; i < rows.length; i += 1_000) {
        const chunk = rows.slice(i, i + 1_000);
        const inserted = await trx
          .insertInto('job_deliveries')
          .values(chunk.map((e) => ({ id: newId(), event_id: e.id, consumer: c.consumer, tenant_id: e.tenant_id, event_name: e.name, max_attempts: c.max_attempts })))
          .onConflict((oc) => oc.columns(['event_id', 'consumer']).doNothing())
          .returning(['id', 'event_id'])
          .execute();
        const byId = new Map(chunk.map((e) => [e.id, e]));
        jobs.push(...inserted.map((d) => ({ deliveryId: d.id, consumer: c.consumer, event: toEnvelope(byId.get(d.event_id)!) })));
      }
    }
    return jobs;
  });
}

/** A running worker keeps its consumers current; one no worker has declared for `retireMs` gets no new deliveries. */
export async function touchConsumers(db: Database, registry: Registry): Promise<void> {
  const names = [...registry.byConsumer.keys()];
  if (names.length === 0) return;
  await db.app.updateTable('job_consumers').set({ last_seen_at: sql`now()` }).where('consumer', 'in', names).execute();
}
