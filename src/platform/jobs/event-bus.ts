import { hostname } from 'node:os';
import { sql, type Kysely, type Transaction } from 'kysely';
import type { Logger } from 'pino';
import type { Config } from '../config.ts';
import type { Database } from '../db/database.ts';
import { AppError } from '../http/errors.ts';
import { newId } from '../ids.ts';
import { instrumentJob } from '../observability/tracing.ts';
import { runInEventContext } from '../outbox/context.ts';
import { addToOutbox, claimOutboxBatch, EVENT_NAME, toEnvelope, type EventEnvelope, type NewEvent } from '../outbox/outbox.ts';
import { createBullTransport, type BullTransport } from './bullmq-transport.ts';
import { createInProcessTransport } from './in-process-transport.ts';
import { backoffDelay, nextRunFn, type ScheduleSpec } from './schedule.ts';
import type { DeliveryJob, ProcessOutcome, QueueView, Transport } from './transport.ts';

export interface HandlerContext {
  /** The handler's transaction (tenant context set when the event has a tenant). Its effects commit
   * together with the processed-event record, so a redelivered event has one effect. */
  trx: Transaction<any>;
  /** Carries eventId, consumer, requestId and traceparent. */
  logger: Logger;
  attempt: number;
}

export type EventHandler<P = any> = (event: EventEnvelope<P>, ctx: HandlerContext) => Promise<void>;

export interface SubscribeOptions {
  /** Attempts before the delivery is dead-lettered (default 5). */
  maxAttempts?: number;
  /** First retry delay (default 1 s); doubles each attempt, with jitter, up to backoffMaxMs (default 5 min). */
  backoffBaseMs?: number;
  backoffMaxMs?: number;
}

export interface ScheduleContext {
  logger: Logger;
  db: Database;
  scheduledAt: Date;
}

export interface DeadJob {
  id: string;
  eventId: string;
  eventName: string;
  consumer: string;
  tenantId: string | null;
  attempts: number;
  maxAttempts: number;
  lastError: string | null;
  failedAt: string;
}

export interface EventBus {
  /** Writes an event in the caller's transaction (see outbox.ts); relayed after commit. */
  add<P>(trx: Transaction<any> | Kysely<any>, event: NewEvent<P>): Promise<EventEnvelope<P>>;
  /** One delivery per (event, consumer): several consumers of one event each get it (fan-out). */
  subscribe<P>(eventName: string, consumer: string, handler: EventHandler<P>, opts?: SubscribeOptions): void;
  /** A recurring job; each due run is claimed by exactly one worker process. */
  schedule(name: string, spec: ScheduleSpec, run: (ctx: ScheduleContext) => Promise<void>): void;
  /** Relay, sweeper, consumers and schedules in this process (the worker role). */
  startWorker(): Promise<void>;
  /** Stops taking work; active jobs finish, the rest stays pending for another worker. */
  stopWorker(): Promise<void>;
  relayOnce(): Promise<number>;
  sweepOnce(olderThanMs?: number): Promise<number>;
  runDueSchedules(): Promise<string[]>;
  listDead(opts: { limit: number; after?: string }): Promise<{ data: DeadJob[]; nextCursor: string | null }>;
  redrive(deliveryId: string): Promise<DeadJob>;
  inspect(): Promise<{ transport: Transport['kind']; queues: QueueView[] }>;
  consumers(): string[];
  /** The BullMQ transport when Redis is configured (for the dashboard). */
  bull(): BullTransport | undefined;
  readonly workerId: string;
  close(): Promise<void>;
}

export interface EventBusDeps {
  config: Config;
  logger: Logger;
  db: Database;
  /** Overrides for tests: schedule tick, sweep cadence. */
  scheduleTickMs?: number;
  sweepEveryMs?: number;
}

interface Subscription {
  eventName: string;
  consumer: string;
  handler: EventHandler;
  maxAttempts: number;
  backoffBaseMs: number;
  backoffMaxMs: number;
}

interface Schedule {
  name: string;
  next: (from: Date) => Date;
  run: (ctx: ScheduleContext) => Promise<void>;
}

const CONSUMER = /^[a-z0-9_][a-z0-9_.-]{0,99}$/;
const BATCH = 200;
const MAX_ERROR_CHARS = 1_000;
/** How long processed-event records (the idempotency window) and settled events are kept. */
export const RETENTION_DAYS = 7;

const ms = (n: number) => sql`(${n}::double precision * interval '1 millisecond')`;

function deadFromRow(r: any): DeadJob {
  return {
    id: r.id,
    eventId: r.event_id,
    eventName: r.event_name,
    consumer: r.consumer,
    tenantId: r.tenant_id,
    attempts: r.attempts,
    maxAttempts: r.max_attempts,
    lastError: r.last_error,
    failedAt: new Date(r.updated_at).toISOString(),
  };
}

/**
 * The async backbone's facade: modules add events in their transactions and subscribe handlers; the worker
 * role relays, processes, retries, dead-letters, sweeps and runs schedules. Postgres is the system of record.
 */
export function createEventBus(deps: EventBusDeps): EventBus {
  const { config, logger, db } = deps;
  const log = logger.child({ component: 'jobs' });
  const workerId = `${hostname()}:${process.pid}:${newId().slice(-8)}`;
  const byName = new Map<string, Subscription[]>();
  const byConsumer = new Map<string, Subscription>();
  const schedules = new Map<string, Schedule>();
  let transport: Transport | undefined;
  let running = false;
  let wake: (() => void) | undefined;
  const loops: Promise<void>[] = [];
  const sleepers = new Set<() => void>();

  function getTransport(): Transport {
    transport ??= config.redisUrl
      ? createBullTransport({
          redisUrl: config.redisUrl,
          prefix: `${config.redisPrefix}bull`,
          concurrency: config.jobsConcurrency,
          stalledMs: config.jobsStalledMs,
          logger: log,
        })
      : createInProcessTransport({ concurrency: config.jobsConcurrency, logger: log });
    return transport;
  }

  async function dispatch(jobs: DeliveryJob[]): Promise<void> {
    if (jobs.length === 0) return;
    try {
      await getTransport().dispatch(jobs);
    } catch (err) {
      // Deliveries stay pending in Postgres; the sweeper dispatches them again.
      log.warn({ jobs: jobs.length, error: (err as Error).message }, 'dispatch failed; the sweeper will retry');
    }
  }

  function nudge(): void {
    if (!wake) return;
    // The caller's transaction has not committed yet; give it a moment before polling.
    const w = wake;
    setTimeout(w, 2).unref();
  }

  async function relayOnce(): Promise<number> {
    let jobs: DeliveryJob[] = [];
    const events = await claimOutboxBatch(db.app, BATCH, async (trx, batch) => {
      const rows = batch.flatMap((event) =>
        (byName.get(event.name) ?? []).map((sub) => ({
          id: newId(),
          event_id: event.id,
          consumer: sub.consumer,
          tenant_id: event.tenantId,
          event_name: event.name,
          max_attempts: sub.maxAttempts,
        })),
      );
      if (rows.length === 0) return;
      const inserted = await trx
        .insertInto('job_deliveries')
        .values(rows)
        .onConflict((oc) => oc.columns(['event_id', 'consumer']).doNothing())
        .returning(['id', 'event_id', 'consumer'])
        .execute();
      const eventsById = new Map(batch.map((e) => [e.id, e]));
      jobs = inserted.map((r: any) => ({ deliveryId: r.id, consumer: r.consumer, event: eventsById.get(r.event_id)! }));
    });
    await dispatch(jobs);
    return events.length;
  }

  async function sweepOnce(olderThanMs = config.jobsSweepAfterMs): Promise<number> {
    const { rows } = await sql<any>`
      with due as (
        select id from job_deliveries
        where status = 'pending' and available_at < now() - ${ms(olderThanMs)}
        order by available_at limit ${BATCH * 5}
        for update skip locked)
      update job_deliveries d set available_at = now(), updated_at = now()
      from due, outbox o
      where d.id = due.id and o.id = d.event_id
      returning d.id as delivery_id, d.consumer, o.id, o.tenant_id, o.name, o.payload, o.request_id, o.traceparent, o.occurred_at`.execute(db.app);
    if (rows.length > 0) log.info({ deliveries: rows.length }, 'sweeper re-dispatching deliveries that were not processed in time');
    await dispatch(rows.map((r) => ({ deliveryId: r.delivery_id, consumer: r.consumer, event: toEnvelope(r) })));
    return rows.length;
  }

  function inTransaction<T>(tenantId: string | null, fn: (trx: Transaction<any>) => Promise<T>): Promise<T> {
    return tenantId ? db.withTenant(tenantId, fn) : db.app.transaction().execute(fn);
  }

  async function processDelivery(job: DeliveryJob): Promise<ProcessOutcome> {
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
    const sub = byConsumer.get(job.consumer);
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
  }

  async function recordFailure(job: DeliveryJob, sub: Subscription, err: Error, jobLog: Logger): Promise<ProcessOutcome> {
    const message = String(err?.message ?? err).slice(0, MAX_ERROR_CHARS);
    const { rows } = await sql<{ attempts: number; max_attempts: number }>`
      select attempts, max_attempts from job_deliveries where id = ${job.deliveryId}`.execute(db.app);
    const current = rows[0];
    if (!current) return {};
    const attempt = current.attempts + 1;
    const dead = attempt >= current.max_attempts;
    const delay = dead ? 0 : backoffDelay(attempt, sub.backoffBaseMs, sub.backoffMaxMs);
    const updated = await sql`
      update job_deliveries
      set attempts = ${attempt}, last_error = ${message}, status = ${dead ? 'dead' : 'pending'},
          available_at = now() + ${ms(delay)}, updated_at = now()
      where id = ${job.deliveryId} and status = 'pending' and attempts = ${current.attempts}`.execute(db.app);
    if (Number(updated.numAffectedRows ?? 0) === 0) return {}; // settled meanwhile by another run
    if (dead) {
      jobLog.error({ attempt, error: message }, 'handler failed for the last time; delivery dead-lettered');
      return {};
    }
    jobLog.warn({ attempt, retryInMs: delay, error: message }, 'handler failed; will retry');
    return { retryAfterMs: delay };
  }

  async function runDueSchedules(): Promise<string[]> {
    const ran: string[] = [];
    for (const s of schedules.values()) {
      const now = new Date();
      await sql`insert into job_schedules (name, next_run_at) values (${s.name}, ${s.next(now)}) on conflict do nothing`.execute(db.app);
      // Claiming is one conditional update: under concurrency exactly one process sees the run as due.
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

  async function loop(name: string, intervalMs: number, body: () => Promise<number | unknown>, useWake = false): Promise<void> {
    while (running) {
      let busy = false;
      try {
        const n = await body();
        busy = typeof n === 'number' && n >= BATCH;
      } catch (err) {
        if (running) log.warn({ loop: name, error: (err as Error).message }, 'background loop iteration failed');
      }
      if (busy || !running) continue;
      await new Promise<void>((resolve) => {
        const timer = setTimeout(done, intervalMs);
        function done() {
          clearTimeout(timer);
          sleepers.delete(done);
          if (wake === done) wake = undefined;
          resolve();
        }
        sleepers.add(done);
        if (useWake) wake = done;
      });
    }
  }

  /** Nightly: processed-event records and settled deliveries/events past retention. */
  async function cleanup({ logger: cLog }: ScheduleContext): Promise<void> {
    const cutoff = sql`now() - interval '1 day' * ${RETENTION_DAYS}`;
    const processed = await sql`delete from processed_events where processed_at < ${cutoff}`.execute(db.app);
    const events = await sql`
      delete from outbox o where o.relayed_at < ${cutoff}
      and not exists (select 1 from job_deliveries d where d.event_id = o.id and d.status <> 'done')`.execute(db.app);
    cLog.info({ processedEvents: Number(processed.numAffectedRows ?? 0), events: Number(events.numAffectedRows ?? 0) }, 'job records cleaned up');
  }

  const bus: EventBus = {
    workerId,
    async add(trx, event) {
      const envelope = await addToOutbox(trx, event);
      nudge();
      return envelope;
    },
    subscribe(eventName, consumer, handler, opts = {}) {
      if (!EVENT_NAME.test(eventName)) throw new Error(`invalid event name "${eventName}"`);
      if (!CONSUMER.test(consumer)) throw new Error(`invalid consumer name "${consumer}" (lowercase, digits, _ . -)`);
      if (byConsumer.has(consumer)) throw new Error(`consumer "${consumer}" is already subscribed`);
      const maxAttempts = opts.maxAttempts ?? 5;
      if (!Number.isInteger(maxAttempts) || maxAttempts < 1 || maxAttempts > 100) throw new Error('maxAttempts must be 1-100');
      const sub: Subscription = {
        eventName,
        consumer,
        handler: handler as EventHandler,
        maxAttempts,
        backoffBaseMs: opts.backoffBaseMs ?? 1_000,
        backoffMaxMs: opts.backoffMaxMs ?? 300_000,
      };
      byConsumer.set(consumer, sub);
      byName.set(eventName, [...(byName.get(eventName) ?? []), sub]);
    },
    schedule(name, spec, run) {
      if (!CONSUMER.test(name)) throw new Error(`invalid schedule name "${name}"`);
      if (schedules.has(name)) throw new Error(`schedule "${name}" already exists`);
      schedules.set(name, { name, next: nextRunFn(spec), run });
    },
    async startWorker() {
      if (running) return;
      running = true;
      const t = getTransport();
      await t.start([...byConsumer.keys()], processDelivery);
      // In-process queues do not survive a restart: pick up whatever an earlier run left pending.
      if (t.kind === 'in-process') await sweepOnce(0).catch((err) => log.warn({ error: err.message }, 'startup sweep failed'));
      const sweepEvery = deps.sweepEveryMs ?? Math.max(100, Math.min(5_000, Math.floor(config.jobsSweepAfterMs / 2)));
      loops.push(loop('relay', config.jobsPollMs, relayOnce, true));
      loops.push(loop('sweeper', sweepEvery, () => sweepOnce()));
      if (schedules.size > 0) loops.push(loop('schedules', deps.scheduleTickMs ?? 1_000, runDueSchedules));
      log.info({ workerId, transport: t.kind, consumers: byConsumer.size, schedules: schedules.size }, 'worker started');
    },
    async stopWorker() {
      if (!running) return;
      running = false;
      for (const wakeUp of [...sleepers]) wakeUp();
      await Promise.allSettled(loops.splice(0));
      await transport?.stop();
      log.info({ workerId }, 'worker stopped');
    },
    relayOnce,
    sweepOnce,
    runDueSchedules,
    async listDead({ limit, after }) {
      let q = db.app
        .selectFrom('job_deliveries')
        .select(['id', 'event_id', 'event_name', 'consumer', 'tenant_id', 'attempts', 'max_attempts', 'last_error', 'updated_at'])
        .where('status', '=', 'dead')
        .orderBy('id')
        .limit(limit + 1);
      if (after) q = q.where('id', '>', after);
      const rows = await q.execute();
      const page = rows.slice(0, limit).map(deadFromRow);
      return { data: page, nextCursor: rows.length > limit ? page[page.length - 1]!.id : null };
    },
    async redrive(deliveryId) {
      const { rows } = await sql<any>`
        update job_deliveries set status = 'pending', attempts = 0, available_at = to_timestamp(0), updated_at = now()
        where id = ${deliveryId} and status = 'dead'
        returning id, event_id, event_name, consumer, tenant_id, attempts, max_attempts, last_error, updated_at`.execute(db.app);
      const row = rows[0];
      if (!row) {
        const exists = await db.app.selectFrom('job_deliveries').select('status').where('id', '=', deliveryId).executeTakeFirst();
        if (!exists) throw new AppError('JOBS.NOT_FOUND', 404, 'No job with this id');
        throw new AppError('JOBS.NOT_DEAD', 409, `The job is ${exists.status}, not dead; only dead jobs can be redriven`);
      }
      log.info({ deliveryId, consumer: row.consumer, eventId: row.event_id }, 'dead job redriven');
      // A running worker dispatches it now; otherwise any worker's sweeper picks it up (available_at is in the past).
      if (running) {
        const event = await db.app.selectFrom('outbox').selectAll().where('id', '=', row.event_id).executeTakeFirst();
        if (event) await dispatch([{ deliveryId: row.id, consumer: row.consumer, event: toEnvelope(event as any) }]);
      }
      return deadFromRow(row);
    },
    async inspect() {
      const t = getTransport();
      return { transport: t.kind, queues: await t.inspect([...byConsumer.keys()]) };
    },
    consumers: () => [...byConsumer.keys()],
    bull() {
      return config.redisUrl ? (getTransport() as BullTransport) : undefined;
    },
    async close() {
      await bus.stopWorker();
      await transport?.close();
    },
  };
  bus.schedule('platform.jobs_cleanup', { cron: '17 3 * * *' }, cleanup);
  return bus;
}
