import { sql, type Kysely } from 'kysely';
import { grantApp, protectTenantTable } from '../src/platform/migrate/helpers.ts';

/** Feature flags: global definitions plus per-tenant overrides (the first tenant table, under RLS). */
export async function up(db: Kysely<any>): Promise<void> {
  await sql`
    create table feature_flags (
      key text primary key check (key ~ '^[a-z0-9][a-z0-9_.-]{0,99}$'),
      description text not null default '',
      default_value jsonb not null,
      updated_at timestamptz not null default now()
    )`.execute(db);
  await grantApp(db, 'feature_flags', ['select']);

  await sql`
    create table feature_flag_overrides (
      tenant_id uuid not null,
      id uuid not null,
      flag_key text not null references feature_flags (key) on delete cascade,
      value jsonb not null,
      created_at timestamptz not null default now(),
      updated_at timestamptz not null default now(),
      primary key (tenant_id, id),
      unique (tenant_id, flag_key)
    )`.execute(db);
  await protectTenantTable(db, 'feature_flag_overrides');
}
