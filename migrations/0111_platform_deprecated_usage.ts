import { sql, type Kysely } from 'kysely';
import { grantApp } from '../src/platform/migrate/helpers.ts';

export const phase = 'expand';

/** Calls of deprecated operations per route, org and day: who must migrate before an operation's sunset. */
export async function up(db: Kysely<any>): Promise<void> {
  await sql`
    create table api_deprecated_usage (
      route text not null,
      org_id text not null default '',
      day date not null,
      requests bigint not null default 0,
      last_seen_at timestamptz not null default now(),
      primary key (route, org_id, day)
    )`.execute(db);
  await grantApp(db, 'api_deprecated_usage', ['select', 'insert', 'update', 'delete']);
}
