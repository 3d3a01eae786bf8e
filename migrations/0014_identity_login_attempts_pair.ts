import { sql, type Kysely } from 'kysely';

/** Failed logins are also counted per (account, client IP) pair: the lockout policy's first limit. */
/** Only widens/adds: the previous release runs unchanged beside it (rollback needs no schema rollback). */
export const phase = 'expand';

export async function up(db: Kysely<any>): Promise<void> {
  await sql`alter table login_attempts drop constraint login_attempts_scope_check`.execute(db);
  await sql`alter table login_attempts add constraint login_attempts_scope_check check (scope in ('account', 'ip', 'account_ip'))`.execute(db);
}
