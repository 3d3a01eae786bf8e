import { sql, type Kysely } from 'kysely';
import { grantApp } from '../src/platform/migrate/helpers.ts';

/**
 * The durable async backbone. These are platform tables read across tenants by the relay, the sweeper
 * and the operator API, so they are not under tenant RLS; every row still carries its tenant_id.
 */
export async function up(db: Kysely<any>): Promise<void> {
  // Events written in the same transaction as the state change that caused them.
  await sql`
    create table outbox (
      id uuid primary key,
      tenant_id uuid,
      name text not null check (name ~ '^[a-z0-9_]+\\.[a-z0-9_.]+$'),
      payload jsonb not null,
      request_id text,
      traceparent text,
      occurred_at timestamptz not null default now(),
      relayed_at timestamptz
    )`.execute(db);
  await sql`create index outbox_unrelayed on outbox (id) where relayed_at is null`.execute(db);
  await sql`create index outbox_relayed_at on outbox (relayed_at) where relayed_at is not null`.execute(db);
  await grantApp(db, 'outbox', ['select', 'insert', 'update', 'delete']);

  // One delivery per (event, consumer): the system of record for job state (Redis only carries it).
  await sql`
    create table job_deliveries (
      id uuid primary key,
      event_id uuid not null references outbox (id) on delete cascade,
      consumer text not null,
      tenant_id uuid,
      event_name text not null,
      status text not null default 'pending' check (status in ('pending', 'done', 'dead')),
      attempts integer not null default 0,
      max_attempts integer not null check (max_attempts between 1 and 100),
      last_error text,
      available_at timestamptz not null default now(),
      created_at timestamptz not null default now(),
      updated_at timestamptz not null default now(),
      unique (event_id, consumer)
    )`.execute(db);
  await sql`create index job_deliveries_pending on job_deliveries (available_at) where status = 'pending'`.execute(db);
  await sql`create index job_deliveries_dead on job_deliveries (id) where status = 'dead'`.execute(db);
  await grantApp(db, 'job_deliveries', ['select', 'insert', 'update', 'delete']);

  // Idempotent consumers: written in the same transaction as the handler's effect.
  await sql`
    create table processed_events (
      consumer text not null,
      event_id uuid not null,
      tenant_id uuid,
      processed_at timestamptz not null default now(),
      primary key (consumer, event_id)
    )`.execute(db);
  await sql`create index processed_events_processed_at on processed_events (processed_at)`.execute(db);
  await grantApp(db, 'processed_events', ['select', 'insert', 'delete']);

  // Recurring jobs: one row per schedule; claiming a due run is an atomic update, so one worker runs it.
  await sql`
    create table job_schedules (
      name text primary key,
      next_run_at timestamptz not null,
      last_run_at timestamptz,
      last_runner text,
      updated_at timestamptz not null default now()
    )`.execute(db);
  await grantApp(db, 'job_schedules', ['select', 'insert', 'update']);
}
