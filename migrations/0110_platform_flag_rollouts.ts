import { sql, type Kysely } from 'kysely';
import { grantApp } from '../src/platform/migrate/helpers.ts';

export const phase = 'expand';

/**
 * Gradual rollout for feature flags: targeting rules, a percentage rollout (optionally ramped in steps
 * with an error-rate guard), a kill switch; a log of every change; per-minute exposure counts of the
 * rolled-out value (requests and server errors) that the ramp's guard reads.
 */
export async function up(db: Kysely<any>): Promise<void> {
  await sql`
    alter table feature_flags
      add column rules jsonb not null default '[]',
      add column rollout jsonb,
      add column ramp jsonb,
      add column killed boolean not null default false,
      add column rollout_full_since timestamptz`.execute(db);

  await sql`
    create table feature_flag_changes (
      id uuid primary key,
      flag_key text not null,
      action text not null,
      actor text not null,
      before jsonb,
      after jsonb,
      at timestamptz not null default now()
    )`.execute(db);
  await sql`create index feature_flag_changes_key on feature_flag_changes (flag_key, at desc)`.execute(db);

  await sql`
    create table feature_flag_exposures (
      flag_key text not null,
      window_start timestamptz not null,
      requests bigint not null default 0,
      errors bigint not null default 0,
      primary key (flag_key, window_start)
    )`.execute(db);
  await grantApp(db, 'feature_flag_exposures', ['select', 'insert', 'update', 'delete']);
}
