import { sql, type Transaction } from 'kysely';
import type { Logger } from 'pino';
import type { Database, DB } from '../db/database.ts';
import { instrumentJob } from '../observability/tracing.ts';
import { backoffDelay } from './cron.ts';
import { ms } from './deliveries.ts';
import { runInEventContext } from './event-context.ts';
import type { Registry, Subscription } from './registry.ts';
import type { DeliveryJob, ProcessOutcome, Processor } from './transport.ts';

const MAX_ERROR_CHARS = 1_000;

/**
 * Runs one delivery: claims it and records the processed event in the handler's own transaction, so the
 * handler's effects, the claim and the record commit together (a redelivered event has one effect).
 * A failure is recorded with a backoff, or dead-letters the delivery after its last attempt.
 */
export function createProcessor(db: Database, registry: Registry, log: Logger): Processor {
  function inTransaction<T>(tenantId: string | null, fn: (trx: Transaction<DB>) => Promise<T>): Promise<T> {
    return tenantId ? db.withTenant(tenantId, fn) : db.app.transaction().execute(fn);
  }

  async function recordFailure(job: DeliveryJob, sub: Subscription, err: Error, jobLog: Logger): Promise<ProcessOutcome> {
    const message = String(err?.message ?? err).slice(0, MAX_ERROR_CHARS);
    const current = await db.app
      .selectFrom('job_deliveries')
      .select(['attempts', 'max_attempts'])
      .where('id', '=', job.deliveryId)
      .executeTakeFirst();
    if (!current) return {};
    const attempt = current.attempts + 1;
    const dead = attempt >= current.max_attempts;
    const delay = dead ? 0 : backoffDelay(attempt, sub.backoffBaseMs, sub.backoffMaxMs);
    const updated = await db.app
      .updateTable('job_deliveries')
      .set({
        attempts: attempt,
        last_error: message,
        status: dead ? 'dead' : 'pending',
        available_at: sql`now() + ${ms(delay)}`,
        updated_at: sql`now()`,
      })
      .where('id', '=', job.deliveryId)
      .where('status', '=', 'pending')
      .where('attempts', '=', current.attempts)
      .executeTakeFirst();
    if (Number(updated.numUpdatedRows) === 0) return {}; // settled meanwhile by another run
    if (dead) {
      jobLog.error({ attempt, error: message }, 'handler failed for the last time; delivery dead-lettered');
      return {};
    }
    jobLog.warn({ attempt, retryInMs: delay, error: message }, 'handler failed; will retry');
    return { retryAfterMs: delay };
  }

  return async function processDelivery(job) {
    const { event } = job;
    const jobLog = log.child({
      eventId: event.id,
      event: event.name,
      consumer: job.consumer,
      deliveryId: job.deliveryId,
      tenantId: event.tenantId,
      requestId: event.requestId ?? undefined,
      traceparent: event.traceparent ?? undefined,
    });
    const sub = registry.byConsumer.get(job.consumer);
    if (!sub) {
      jobLog.warn('no handler for this consumer in this process; retrying later');
      return { retryAfterMs: 60_000 };
    }
    const ctx = { requestId: event.requestId ?? undefined, traceparent: event.traceparent ?? undefined };
    try {
      // One CONSUMER span per attempt, child of the span that added the event (request → outbox → job is
      // one trace), and plinth_job_duration_seconds{queue=consumer,outcome}.
      const result = await instrumentJob({ queue: job.consumer, name: event.name, traceparent: event.traceparent }, () => runInEventContext(ctx, () =>
        inTransaction(event.tenantId, async (trx) => {
          // One round trip claims the delivery (row lock: a concurrent duplicate waits, then sees it settled)
          // and writes the processed-event record; a failing handler rolls both back.
          const { rows } = await sql<{ claimed: number; fresh: number; attempts: number }>`
            with d as (
              update job_deliveries set status = 'done', attempts = attempts + 1, last_error = null, updated_at = now()
              where id = ${job.deliveryId} and status = 'pending' returning attempts),
            p as (
              insert into processed_events (consumer, event_id, tenant_id)
              select ${job.consumer}, ${event.id}::uuid, ${event.tenantId}::uuid from d
              on conflict do nothing returning event_id)
            select (select count(*)::int from d) as claimed, (select count(*)::int from p) as fresh,
                   coalesce((select attempts from d), 0) as attempts`.execute(trx);
          const { claimed, fresh, attempts } = rows[0]!;
          if (!claimed) return 'skipped';
          if (!fresh) return 'duplicate';
          await sub.handler(event, { trx, logger: jobLog, attempt: attempts });
          return 'done';
        }),
      ));
      if (result === 'done') jobLog.debug('event handled');
      else jobLog.debug({ result }, 'delivery already settled; not run again');
      return {};
    } catch (err) {
      return recordFailure(job, sub, err as Error, jobLog);
    }
  };
}
