import { sql, type Kysely } from 'kysely';
import { grantApp } from '../src/platform/migrate/helpers.ts';

export const phase = 'expand';

/**
 * What each organization costs, per day: requests and their time, database time inside its tenant
 * transactions, jobs and their time, and the bytes its rows take. Written by every process (flushed
 * counters) and by a daily storage measurement; read by operators to find the most expensive tenants.
 */
export async function up(db: Kysely<any>): Promise<void> {
  await sql`
    create table tenant_costs (
      org_id uuid not null,
      day date not null,
      requests bigint not null default 0,
      request_ms double precision not null default 0,
      db_ms double precision not null default 0,
      jobs bigint not null default 0,
      job_ms double precision not null default 0,
      storage_bytes bigint,
      primary key (org_id, day)
    )`.execute(db);
  await grantApp(db, 'tenant_costs', ['select', 'insert', 'update', 'delete']);
}
