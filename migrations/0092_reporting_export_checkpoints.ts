import { sql, type Kysely } from 'kysely';

export const phase = 'expand';

/**
 * Resumable exports (reporting module): the export's checkpoint, written with each uploaded part — the keyset
 * cursor of the last row in the file, rows and bytes written, and the storage port's upload state (multipart
 * upload id and parts). A worker that takes over a crashed export continues from it.
 */
export async function up(db: Kysely<any>): Promise<void> {
  await sql`alter table reporting_exports add column checkpoint jsonb`.execute(db);
}
