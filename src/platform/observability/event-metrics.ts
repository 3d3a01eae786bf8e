import { sql } from 'kysely';
import type { Database } from '../db/database.ts';
import { registerJobMetrics, registerOutboxMetrics, type JobCount } from './metrics.ts';

/** What the event bus (platform/jobs) offers for metrics; structural, so observability never imports jobs. */
export interface QueueInspector {
  inspect(): Promise<{ queues: Array<{ consumer: string; waiting: number; active: number; delayed: number }> }>;
}

/**
 * Feeds the outbox and job gauges from the system of record (Postgres) at scrape time, plus the
 * transport's live queue view (BullMQ or in-process): `plinth_outbox_backlog` / `_oldest_age_seconds`
 * from unrelayed outbox rows, `plinth_jobs{queue,state}` with `pending`/`dead` deliveries (settled
 * `done` rows are history, not state) and `waiting`/`active`/`delayed` from the transport. Queue =
 * consumer name. Returns the unregister function for shutdown.
 */
export function registerEventMetrics(deps: { db: Database; events: QueueInspector }): () => void {
  const { db, events } = deps;
  const offOutbox = registerOutboxMetrics(async () => {
    const { rows } = await sql<{ backlog: number; age: number | string | null }>`
      select count(*)::int as backlog, extract(epoch from now() - min(occurred_at)) as age
      from outbox where relayed_at is null`.execute(db.app);
    const row = rows[0];
    return { backlog: row?.backlog ?? 0, oldestAgeSeconds: Math.max(0, Number(row?.age ?? 0)) };
  });
  const offJobs = registerJobMetrics(async () => {
    const [{ rows }, view] = await Promise.all([
      sql<{ queue: string; state: string; count: number }>`
        select consumer as queue, status as state, count(*)::int as count
        from job_deliveries where status <> 'done' group by 1, 2`.execute(db.app),
      events.inspect(),
    ]);
    const counts: JobCount[] = rows.map((r) => ({ queue: r.queue, state: r.state, count: r.count }));
    for (const q of view.queues) {
      // Every known consumer reports pending and dead, 0 included, so a first dead letter is a change
      // (delta/increase see it) rather than a series appearing from nothing.
      for (const state of ['pending', 'dead']) {
        if (!rows.some((r) => r.queue === q.consumer && r.state === state)) counts.push({ queue: q.consumer, state, count: 0 });
      }
      counts.push(
        { queue: q.consumer, state: 'waiting', count: q.waiting },
        { queue: q.consumer, state: 'active', count: q.active },
        { queue: q.consumer, state: 'delayed', count: q.delayed },
      );
    }
    return counts;
  });
  return () => {
    offOutbox();
    offJobs();
  };
}
