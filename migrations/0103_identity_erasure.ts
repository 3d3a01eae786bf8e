import { sql, type Kysely } from 'kysely';

/**
 * GDPR art. 17 for accounts: an erased user's row stays (ids referenced by other modules keep pointing at
 * something) but its personal values are replaced; `erased_at` says when. Expand: a nullable column the
 * previous release ignores (an erased account is disabled too, so the previous release refuses its sign-in).
 */
export const phase = 'expand';

export async function up(db: Kysely<any>): Promise<void> {
  await sql`alter table users add column erased_at timestamptz(3)`.execute(db);
}
