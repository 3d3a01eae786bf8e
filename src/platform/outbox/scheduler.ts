import { sql } from 'kysely';
import type { Logger } from 'pino';
import type { Database } from '../db/database.ts';
import type { Registry } from './registry.ts';

/**
 * Runs every schedule that is due. Claiming is one conditional update: under concurrency exactly one
 * process sees a run as due. Returns the names of the schedules this process ran.
 */
export async function runDueSchedules(db: Database, registry: Registry, log: Logger, workerId: string): Promise<string[]> {
  const ran: string[] = [];
  for (const s of registry.schedules.values()) {
    const now = new Date();
    await sql`insert into job_schedules (name, next_run_at) values (${s.name}, ${s.next(now)}) on conflict do nothing`.execute(db.app);
    const { rows } = await sql<{ due: Date }>`
      with due as (
        select name, next_run_at from job_schedules where name = ${s.name} and next_run_at <= now()
        for update skip locked)
      update job_schedules j set next_run_at = ${s.next(now)}, last_run_at = now(), last_runner = ${workerId}, updated_at = now()
      from due where j.name = due.name
      returning due.next_run_at as due`.execute(db.app);
    const claimed = rows[0];
    if (!claimed) continue;
    const scheduledAt = new Date(claimed.due);
    const sLog = log.child({ schedule: s.name, scheduledAt: scheduledAt.toISOString() });
    try {
      await s.run({ logger: sLog, db, scheduledAt });
      sLog.info('scheduled job ran');
    } catch (err) {
      sLog.error({ error: (err as Error).message }, 'scheduled job failed; it runs again at its next time');
    }
    ran.push(s.name);
  }
  return ran;
}
