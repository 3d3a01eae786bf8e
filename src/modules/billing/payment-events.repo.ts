import { sql, type Kysely, type Transaction } from 'kysely';
import type { Database, DbScope } from '../../platform/db/database.ts';
import type { DB } from '../../platform/db/schema.generated.ts';

/** The payment-webhook inbox (migration 0087): global, keyed by (gateway, gateway event id). */
export type PaymentEventTables = Pick<DB, 'billing_payment_events'>;
export type PaymentEventsScope = DbScope<PaymentEventTables>;
type Conn = Kysely<PaymentEventTables> | Transaction<PaymentEventTables>;

export function paymentEventsScope(db: Database): PaymentEventsScope {
  return db.scope('billing_payment_events');
}

export type PaymentEventStatus = 'received' | 'processed' | 'ignored' | 'stale';

export interface NewPaymentEvent {
  id: string;
  gateway: string;
  eventId: string;
  eventType: string;
  orgId: string | null;
  objectId: string | null;
  eventCreatedAt: Date;
  payload: unknown;
  status: 'received' | 'ignored';
  outcome: string | null;
}

export interface PaymentEventRow {
  id: string;
  gateway: string;
  eventId: string;
  eventType: string;
  orgId: string | null;
  objectId: string | null;
  eventCreatedAt: Date;
  payload: unknown;
  status: PaymentEventStatus;
  outcome: string | null;
}

/** Inserts unless the gateway's event id is already stored; true when this call stored it. */
export async function insertEvent(db: Conn, e: NewPaymentEvent): Promise<boolean> {
  const row = await db
    .insertInto('billing_payment_events')
    .values({
      id: e.id,
      gateway: e.gateway,
      event_id: e.eventId,
      event_type: e.eventType,
      org_id: e.orgId,
      object_id: e.objectId,
      event_created_at: e.eventCreatedAt,
      payload: JSON.stringify(e.payload),
      status: e.status,
      outcome: e.outcome,
      processed_at: e.status === 'ignored' ? sql<Date>`now()` : null,
    })
    .onConflict((oc) => oc.columns(['gateway', 'event_id']).doNothing())
    .returning('id')
    .executeTakeFirst();
  return row !== undefined;
}

/**
 * Locks a received event for processing, together with every event about the same payment (a transaction-
 * scoped advisory lock on gateway + object): two deliveries about one payment are judged one after the
 * other, so "is a newer one already applied?" is answered under the lock. Undefined when it is not
 * waiting (processed by an earlier delivery of the job).
 */
export async function claimEvent(trx: Transaction<PaymentEventTables>, id: string): Promise<PaymentEventRow | undefined> {
  const peek = await trx.selectFrom('billing_payment_events').select(['gateway', 'object_id']).where('id', '=', id).executeTakeFirst();
  if (!peek) return undefined;
  await sql`select pg_advisory_xact_lock(hashtextextended(${`billing.payment:${peek.gateway}:${peek.object_id ?? id}`}, 0))`.execute(trx);
  const row = await trx.selectFrom('billing_payment_events').selectAll().where('id', '=', id).where('status', '=', 'received').forUpdate().executeTakeFirst();
  return row ? toRow(row) : undefined;
}

/** Events about the same payment already applied, newest first (the judge of an out-of-order delivery). */
export async function appliedForObject(trx: Transaction<PaymentEventTables>, gateway: string, objectId: string, exceptId: string): Promise<PaymentEventRow[]> {
  const rows = await trx
    .selectFrom('billing_payment_events')
    .selectAll()
    .where('gateway', '=', gateway)
    .where('object_id', '=', objectId)
    .where('status', '=', 'processed')
    .where('id', '<>', exceptId)
    .orderBy('event_created_at', 'desc')
    .limit(20)
    .execute();
  return rows.map(toRow);
}

export async function settleEvent(trx: Conn, id: string, status: Exclude<PaymentEventStatus, 'received'>, outcome: string | null): Promise<void> {
  await trx.updateTable('billing_payment_events').set({ status, outcome, processed_at: sql<Date>`now()` }).where('id', '=', id).execute();
}

export async function findEvent(db: Conn, gateway: string, eventId: string): Promise<PaymentEventRow | undefined> {
  const row = await db.selectFrom('billing_payment_events').selectAll().where('gateway', '=', gateway).where('event_id', '=', eventId).executeTakeFirst();
  return row ? toRow(row) : undefined;
}

/** Retention: settled events older than the cutoff, a bounded batch per call. */
export async function deleteSettledBefore(db: Conn, cutoff: Date, limit: number): Promise<number> {
  const r = await db
    .deleteFrom('billing_payment_events')
    .where('id', 'in', (q) => q.selectFrom('billing_payment_events').select('id').where('received_at', '<', cutoff).where('status', '<>', 'received').limit(limit))
    .executeTakeFirst();
  return Number(r.numDeletedRows);
}

function toRow(r: {
  id: string;
  gateway: string;
  event_id: string;
  event_type: string;
  org_id: string | null;
  object_id: string | null;
  event_created_at: Date | string;
  payload: unknown;
  status: string;
  outcome: string | null;
}): PaymentEventRow {
  return {
    id: r.id,
    gateway: r.gateway,
    eventId: r.event_id,
    eventType: r.event_type,
    orgId: r.org_id,
    objectId: r.object_id,
    eventCreatedAt: new Date(r.event_created_at),
    payload: r.payload,
    status: r.status as PaymentEventStatus,
    outcome: r.outcome,
  };
}
