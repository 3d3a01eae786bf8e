import { sql } from 'kysely';
import type { Logger } from 'pino';
import type { Database } from '../db/database.ts';
import type { Registry, Schedule } from './registry.ts';

/**
 * Runs every schedule that is due, one after another (the CLI and tests; the worker runs each schedule in a
 * loop of its own, `runScheduleIfDue`, so a long run of one never delays the others). Returns the schedules
 * this process ran.
 */
export async function runDueSchedules(db: Database, registry: Registry, log: Logger, workerId: string): Promise<string[]> {
  const ran: string[] = [];
  for (const s of registry.schedules.values()) if (await runScheduleIfDue(db, s, log, workerId)) ran.push(s.name);
  return ran;
}

/**
 * Runs one schedule if it is due. One clock decides: the database's. Due-ness is tested against its now(),
 * and the next occurrence is computed from its now() too, so workers whose clocks are skewed can never re-arm
 * an occurrence that already ran. An occurrence is claimed by its scheduled time (a compare-and-set on
 * next_run_at), so exactly one runner wins it. Returns whether this process ran it.
 */
export async function runScheduleIfDue(db: Database, s: Schedule, log: Logger, workerId: string): Promise<boolean> {
  const row = await db.app
    .selectFrom('job_schedules')
    .select([sql<Date>`date_trunc('milliseconds', next_run_at)`.as('next_run_at'), sql<Date>`now()`.as('db_now')])
    .where('name', '=', s.name)
    .executeTakeFirst();
  if (!row) {
    const { rows } = await sql<{ db_now: Date }>`select now() as db_now`.execute(db.app);
    const first = s.next(new Date(rows[0]!.db_now));
    await db.app.insertInto('job_schedules').values({ name: s.name, next_run_at: first }).onConflict((oc) => oc.doNothing()).execute();
    return false;
  }
  const due = new Date(row.next_run_at);
  const dbNow = new Date(row.db_now);
  if (due > dbNow) return false;
  const claimed = await db.app
    .updateTable('job_schedules')
    .set({ next_run_at: s.next(dbNow), last_run_at: sql`now()`, last_runner: workerId, updated_at: sql`now()` })
    .where('name', '=', s.name)
    // Compared at the millisecond precision a JS Date carries (the column keeps microseconds).
    .where(sql<Date>`date_trunc('milliseconds', next_run_at)`, '=', due)
    .executeTakeFirst();
  if (Number(claimed.numUpdatedRows) !== 1) return false; // another runner took this occurrence
  const sLog = log.child({ schedule: s.name, scheduledAt: due.toISOString() });
  try {
    await s.run({ logger: sLog, db, scheduledAt: due });
    // Schedules that run every few seconds (the audit sequencer: every second) would flood the log at info.
    sLog[s.frequent ? 'debug' : 'info']('scheduled job ran');
  } catch (err) {
    sLog.error({ error: (err as Error).message }, 'scheduled job failed; it runs again at its next time');
  }
  return true;
}
