import { sql, type Kysely } from 'kysely';

/** Lets the login throttle sweep expired attempts of keys that are never tried again, by time. */
export async function up(db: Kysely<any>): Promise<void> {
  await sql`create index login_attempts_time_idx on login_attempts (attempted_at)`.execute(db);
}
