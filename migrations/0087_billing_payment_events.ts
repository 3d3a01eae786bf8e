import { sql, type Kysely } from 'kysely';
import { grantApp } from '../src/platform/migrate/helpers.ts';

export const phase = 'expand';

/**
 * The inbox of incoming payment-gateway webhooks (issue #14): each verified event is stored here first,
 * deduplicated by the gateway's own event id, then processed asynchronously. Keyed globally, like the
 * outbox: the org is not known until the signed payload is read (its `metadata.orgId`), and some events
 * name no org at all (those are kept, marked ignored). `org_id` is the routing the signature vouches for;
 * the update itself runs in that org's tenant context.
 */
export async function up(db: Kysely<any>): Promise<void> {
  await sql`
    create table billing_payment_events (
      id uuid primary key,
      gateway text not null check (gateway in ('sandbox', 'stripe')),
      event_id text not null check (char_length(event_id) between 1 and 255),
      event_type text not null check (char_length(event_type) between 1 and 200),
      org_id uuid,
      -- The payment (gateway payment id) the event is about, when it is about one.
      object_id text check (char_length(object_id) <= 255),
      -- The gateway's clock: deliveries arrive in any order; the newest state of a payment wins.
      event_created_at timestamptz(3) not null,
      payload jsonb not null,
      status text not null default 'received' check (status in ('received', 'processed', 'ignored', 'stale')),
      outcome text check (char_length(outcome) <= 200),
      received_at timestamptz(3) not null default now(),
      processed_at timestamptz(3),
      unique (gateway, event_id)
    )`.execute(db);
  await sql`create index billing_payment_events_object on billing_payment_events (gateway, object_id, event_created_at) where object_id is not null`.execute(db);
  await sql`create index billing_payment_events_received on billing_payment_events (received_at)`.execute(db);
  await grantApp(db, 'billing_payment_events', ['select', 'insert', 'update', 'delete']);
}
