import { sql, type Transaction } from 'kysely';
import type { Logger } from 'pino';
import { setTenant, type Database, type DB } from '../db/database.ts';
import { isUuid } from '../ids.ts';
import { instrumentJob } from '../observability/tracing.ts';
import { backoffDelay } from './cron.ts';
import { ms } from './deliveries.ts';
import { runInEventContext } from './event-context.ts';
import type { Registry, Subscription } from './registry.ts';
import { PROCESS_BATCH, type DeliveryJob, type ProcessOutcome, type Processor } from './transport.ts';

const MAX_ERROR_CHARS = 1_000;

interface Claimed {
  attempts: number;
  maxAttempts: number;
  fresh: boolean;
}
const DONE: ProcessOutcome = {};
const SAVEPOINT = 'plinth_handler';
/** Handler time one transaction of a batch aims at: longer holds its row locks and connection too long. */
const TX_BUDGET_MS = 200;
/** Deliveries per transaction for a consumer whose handler time is not known yet. */
const FIRST_CHUNK = 10;
/** A consumer this process has no handler for (a newer worker declared it): left for a process that has. */
const NOT_HERE: ProcessOutcome = { retryAfterMs: 60_000 };

/**
 * Runs deliveries: claims them and records the processed events in the handlers' own transaction, so a
 * handler's effects, its claim and its record commit together (a redelivered event has one effect).
 *
 * A batch runs in one transaction per consumer, across tenants: one statement claims every delivery and
 * records every processed event, then the handlers run one after another on that transaction, each with its
 * event's tenant context (`app.tenant_id`, set transaction-locally before it: RLS binds each handler's
 * statements to its own tenant, as a transaction per tenant would) and behind a savepoint, then one commit.
 * A burst over many tenants (a period end's renewals: one event per org) then costs one commit per batch
 * instead of one per delivery. Deliveries run in tenant order, so two transactions of a consumer take
 * tenants' row locks in the same order and cannot wait on each other in a cycle. A handler that fails is rolled back to its savepoint alone: its claim and record are
 * undone and its failure recorded in the same transaction (retried with a backoff, or dead-lettered after
 * its last attempt), while the others' effects stand — a sibling's failure never runs a handler twice.
 * If the transaction itself fails (connection lost, a handler that broke it), its deliveries run again one
 * transaction each. A consumer subscribed `batchSafe` (its effects are all in the transaction) skips the
 * savepoints — one round trip per delivery — and takes that path when one of its handlers fails.
 *
 * How many deliveries share a transaction follows the consumer's measured handler time (about
 * TX_BUDGET_MS of handlers per transaction): fast handlers run up to a whole batch together; slow ones
 * (an HTTP call) run in small transactions side by side, at most `concurrency` per consumer at once.
 */
export function createProcessor(db: Database, registry: Registry, log: Logger, opts: { concurrency?: number } = {}): Processor {
  /** Per consumer: a moving average of its handler's duration (ms), and its transactions in progress. */
  const handlerMs = new Map<string, number>();
  const slots = new Map<string, <T>(fn: () => Promise<T>) => Promise<T>>();
  const slotsOf = (consumer: string) => {
    let s = slots.get(consumer);
    if (!s) slots.set(consumer, (s = createSlots(opts.concurrency ?? 8)));
    return s;
  };

  function inTransaction<T>(tenantId: string | null, fn: (trx: Transaction<DB>) => Promise<T>): Promise<T> {
    return tenantId ? db.withTenant(tenantId, fn) : db.app.transaction().execute(fn);
  }

  function jobLogger(job: DeliveryJob): Logger {
    const { event } = job;
    return log.child({
      eventId: event.id,
      event: event.name,
      consumer: job.consumer,
      deliveryId: job.deliveryId,
      tenantId: event.tenantId,
      requestId: event.requestId ?? undefined,
      traceparent: event.traceparent ?? undefined,
    });
  }

  /** One CONSUMER span per attempt, child of the span that added the event, and plinth_job_duration_seconds. */
  async function runHandler(job: DeliveryJob, sub: Subscription, trx: Transaction<DB>, attempt: number, jobLog?: Logger): Promise<void> {
    const { event } = job;
    const ctx = { requestId: event.requestId ?? undefined, traceparent: event.traceparent ?? undefined };
    // The child logger (seven bindings) only when the handler logs: most fast handlers never do.
    let logger = jobLog;
    const handlerCtx = { trx, attempt, get logger() { return (logger ??= jobLogger(job)); } };
    const started = performance.now();
    try {
      await instrumentJob({ queue: job.consumer, name: event.name, traceparent: event.traceparent }, () =>
        runInEventContext(ctx, () => sub.handler(event, handlerCtx)),
      );
    } finally {
      const took = performance.now() - started;
      // What the org's events cost the workers (tenant_costs: jobs, job_ms).
      if (event.tenantId) db.costs.job(event.tenantId, took);
      const avg = handlerMs.get(job.consumer);
      handlerMs.set(job.consumer, avg === undefined ? took : avg + (took - avg) * 0.2);
    }
  }

  /** What a failed attempt leads to: dead after the last attempt, else a retry after a backoff. */
  function failure(attempt: number, maxAttempts: number, sub: Subscription, err: Error) {
    const dead = attempt >= maxAttempts;
    return { message: String(err?.message ?? err).slice(0, MAX_ERROR_CHARS), dead, delay: dead ? 0 : backoffDelay(attempt, sub.backoffBaseMs, sub.backoffMaxMs) };
  }

  function logFailure(jobLog: Logger, attempt: number, f: ReturnType<typeof failure>): ProcessOutcome {
    if (f.dead) {
      jobLog.error({ attempt, error: f.message }, 'handler failed for the last time; delivery dead-lettered');
      return DONE;
    }
    jobLog.warn({ attempt, retryInMs: f.delay, error: f.message }, 'handler failed; will retry');
    return { retryAfterMs: f.delay };
  }

  /** After its own transaction rolled back: one delivery's failure, recorded unless another run settled it. */
  async function recordFailure(job: DeliveryJob, sub: Subscription, err: Error, jobLog: Logger): Promise<ProcessOutcome> {
    const current = await db.app
      .selectFrom('job_deliveries')
      .select(['attempts', 'max_attempts'])
      .where('id', '=', job.deliveryId)
      .executeTakeFirst();
    if (!current) return DONE;
    const attempt = current.attempts + 1;
    const f = failure(attempt, current.max_attempts, sub, err);
    const updated = await db.app
      .updateTable('job_deliveries')
      .set({
        attempts: attempt,
        last_error: f.message,
        status: f.dead ? 'dead' : 'pending',
        available_at: sql`now() + ${ms(f.delay)}`,
        updated_at: sql`now()`,
      })
      .where('id', '=', job.deliveryId)
      .where('status', '=', 'pending')
      .where('attempts', '=', current.attempts)
      .executeTakeFirst();
    if (Number(updated.numUpdatedRows) === 0) return DONE; // settled meanwhile by another run
    return logFailure(jobLog, attempt, f);
  }

  /**
   * Inside a batch, after the handler's savepoint was rolled back: its claim (done, attempts + 1) becomes
   * the failed attempt and its processed record goes, in the batch's transaction (one statement).
   */
  async function failInBatch(trx: Transaction<DB>, job: DeliveryJob, sub: Subscription, c: Claimed, err: Error, jobLog: Logger): Promise<ProcessOutcome> {
    const f = failure(c.attempts, c.maxAttempts, sub, err);
    await sql`
      with forget as (delete from processed_events where consumer = ${job.consumer} and event_id = ${job.event.id}::uuid)
      update job_deliveries set status = ${f.dead ? 'dead' : 'pending'}, last_error = ${f.message},
        available_at = now() + ${ms(f.delay)}, updated_at = now()
      where id = ${job.deliveryId}`.execute(trx);
    return logFailure(jobLog, c.attempts, f);
  }

  /**
   * Opens the savepoint before a handler and sets its tenant context after it (a rollback to the savepoint
   * undoes the context with the handler's writes), releasing the previous savepoint in the same round trip on
   * Postgres (the id goes inline, so it must be a well-formed UUID, as in the database's tenant runner).
   */
  async function savepoint(trx: Transaction<DB>, first: boolean, tenantId: string | null): Promise<void> {
    const tenant = tenantId ?? '';
    if (db.kind === 'postgres' && (tenant === '' || isUuid(tenant))) {
      const release = first ? '' : `release savepoint ${SAVEPOINT}; `;
      await sql.raw(`${release}savepoint ${SAVEPOINT}; select set_config('app.tenant_id', '${tenant.toLowerCase()}', true)`).execute(trx);
      return;
    }
    if (!first) await sql.raw(`release savepoint ${SAVEPOINT}`).execute(trx);
    await sql.raw(`savepoint ${SAVEPOINT}`).execute(trx);
    await setTenant(trx, tenant);
  }

  /**
   * One round trip claims the deliveries (row locks taken in id order, so two overlapping batches cannot
   * deadlock; a concurrent duplicate waits, then finds them settled) and writes the processed-event records.
   * Returns, per claimed delivery, its attempt number and whether its processed record is new.
   */
  async function claim(trx: Transaction<DB>, jobs: DeliveryJob[]): Promise<Map<string, Claimed>> {
    const { rows } = await sql<{ id: string; attempts: number; max_attempts: number; fresh: boolean }>`
      with l as (
        select id from job_deliveries
        where id = any(${jobs.map((j) => j.deliveryId)}::uuid[]) and status = 'pending'
        order by id for update),
      d as (
        update job_deliveries j set status = 'done', attempts = j.attempts + 1, last_error = null, updated_at = now()
        from l where j.id = l.id
        returning j.id, j.event_id, j.consumer, j.tenant_id, j.attempts, j.max_attempts),
      p as (
        insert into processed_events (consumer, event_id, tenant_id)
        select consumer, event_id, tenant_id from d
        on conflict do nothing returning consumer, event_id)
      select d.id, d.attempts, d.max_attempts, (p.event_id is not null) as fresh
      from d left join p on p.event_id = d.event_id and p.consumer = d.consumer`.execute(trx);
    return new Map(rows.map((r) => [r.id, { attempts: r.attempts, maxAttempts: r.max_attempts, fresh: r.fresh }]));
  }

  /** Its own transaction: the path of a lone delivery and of each delivery of a batch that failed. */
  async function processOne(job: DeliveryJob, sub: Subscription): Promise<ProcessOutcome> {
    const jobLog = jobLogger(job);
    try {
      const result = await inTransaction(job.event.tenantId, async (trx) => {
        const claimed = (await claim(trx, [job])).get(job.deliveryId);
        if (!claimed) return 'skipped';
        if (!claimed.fresh) return 'duplicate';
        await runHandler(job, sub, trx, claimed.attempts, jobLog);
        return 'done';
      });
      if (result === 'done') jobLog.debug('event handled');
      else jobLog.debug({ result }, 'delivery already settled; not run again');
      return DONE;
    } catch (err) {
      return recordFailure(job, sub, err as Error, jobLog);
    }
  }

  /** A chunk of one consumer's deliveries (tenant order) in one transaction; undefined if the transaction itself failed. */
  async function processTogether(group: Array<{ job: DeliveryJob; sub: Subscription }>): Promise<ProcessOutcome[] | undefined> {
    // One consumer per group: batch-safe handlers share the transaction without savepoints, and a failure
    // of any of them rolls the whole transaction back (then each runs alone, below).
    const batchSafe = group[0]!.sub.batchSafe;
    try {
      return await db.app.transaction().execute(async (trx) => {
        const claimed = await claim(trx, group.map((g) => g.job));
        const outcomes = group.map(() => DONE);
        let first = true;
        let tenant: string | undefined;
        for (const [i, { job, sub }] of group.entries()) {
          const c = claimed.get(job.deliveryId);
          if (!c?.fresh) continue;
          if (batchSafe) {
            if (tenant !== (job.event.tenantId ?? '')) await setTenant(trx, (tenant = job.event.tenantId ?? ''));
            await runHandler(job, sub, trx, c.attempts);
            continue;
          }
          await savepoint(trx, first, job.event.tenantId);
          first = false;
          try {
            await runHandler(job, sub, trx, c.attempts);
          } catch (err) {
            await sql.raw(`rollback to savepoint ${SAVEPOINT}`).execute(trx);
            outcomes[i] = await failInBatch(trx, job, sub, c, err as Error, jobLogger(job));
          }
        }
        return outcomes;
      });
    } catch (err) {
      log.warn({ deliveries: group.length, error: (err as Error).message }, 'batch transaction failed; running its deliveries one by one');
      return undefined;
    }
  }

  /** Deliveries one transaction takes: as many as fit in TX_BUDGET_MS at the consumer's usual handler time. */
  function chunkSize(consumer: string): number {
    const avg = handlerMs.get(consumer);
    return avg === undefined ? FIRST_CHUNK : Math.max(1, Math.min(PROCESS_BATCH, Math.floor(TX_BUDGET_MS / Math.max(avg, 0.01))));
  }

  async function processChunk(chunk: Array<{ job: DeliveryJob; sub: Subscription; index: number }>, outcomes: ProcessOutcome[]): Promise<void> {
    const together = chunk.length > 1 ? await processTogether(chunk) : undefined;
    if (together) together.forEach((outcome, i) => (outcomes[chunk[i]!.index] = outcome));
    else for (const { job, sub, index } of chunk) outcomes[index] = await processOne(job, sub);
  }

  return async function processBatch(jobs) {
    const outcomes: ProcessOutcome[] = jobs.map(() => DONE);
    // One transaction per consumer (each handler with its own tenant context), in first-seen order.
    const groups = new Map<string, Array<{ job: DeliveryJob; sub: Subscription; index: number }>>();
    jobs.forEach((job, index) => {
      const sub = registry.byConsumer.get(job.consumer);
      if (!sub) {
        jobLogger(job).warn('no handler for this consumer in this process; retrying later');
        outcomes[index] = NOT_HERE;
        return;
      }
      const group = groups.get(job.consumer) ?? [];
      group.push({ job, sub, index });
      groups.set(job.consumer, group);
    });
    // Tenant order (stable: a tenant's events keep theirs), so every transaction takes tenants' locks in one order.
    const tenantOf = (g: { job: DeliveryJob }) => g.job.event.tenantId ?? '';
    for (const group of groups.values()) group.sort((a, b) => (tenantOf(a) < tenantOf(b) ? -1 : tenantOf(a) > tenantOf(b) ? 1 : a.index - b.index));
    // Fast handlers share a transaction; slow ones (an HTTP call) get small chunks that run side by side,
    // at most `concurrency` transactions per consumer at once, as unbatched jobs did.
    const chunks: Array<Array<{ job: DeliveryJob; sub: Subscription; index: number }>> = [];
    for (const group of groups.values()) {
      const size = chunkSize(group[0]!.sub.consumer);
      for (let i = 0; i < group.length; i += size) chunks.push(group.slice(i, i + size));
    }
    await Promise.all(chunks.map((chunk) => slotsOf(chunk[0]!.sub.consumer)(() => processChunk(chunk, outcomes))));
    return outcomes;
  };
}

/** Runs at most `n` functions at once; the others wait in order. */
function createSlots(n: number): <T>(fn: () => Promise<T>) => Promise<T> {
  let free = n;
  const waiting: Array<() => void> = [];
  return async (fn) => {
    if (free > 0) free--;
    else await new Promise<void>((resolve) => waiting.push(resolve));
    try {
      return await fn();
    } finally {
      const next = waiting.shift();
      if (next) next();
      else free++;
    }
  };
}
