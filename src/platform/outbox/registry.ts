import type { Logger } from 'pino';
import type { Database, TxHandle } from '../db/database.ts';
import { nextRunFn, type ScheduleSpec } from './cron.ts';
import { EVENT_NAME, type EventEnvelope } from './publisher.ts';

export interface HandlerContext {
  /** The handler's transaction (tenant context set when the event has a tenant). Its effects commit
   * together with the processed-event record, so a redelivered event has one effect. Join it with the
   * module's scope (`db.join(trx)`) to query the module's tables. */
  trx: TxHandle;
  /** Carries eventId, consumer, requestId and traceparent. */
  logger: Logger;
  attempt: number;
}

export type EventHandler<P = unknown> = (event: EventEnvelope<P>, ctx: HandlerContext) => Promise<void>;

export interface SubscribeOptions {
  /** Attempts before the delivery is dead-lettered (default 5). */
  maxAttempts?: number;
  /** First retry delay (default 1 s); doubles each attempt, with jitter, up to backoffMaxMs (default 5 min). */
  backoffBaseMs?: number;
  backoffMaxMs?: number;
  /**
   * The handler's only effects are writes in its transaction (no HTTP call, no Redis write, no e-mail). A
   * batch of such deliveries runs without a savepoint per handler (one round trip each, the bulk of a fast
   * handler's cost): if one fails, the whole transaction rolls back and each delivery of the batch runs again
   * in its own transaction — a handler may then run twice, but only one run's effects commit, with the
   * processed-event record, so each event still has exactly one effect. Default false: a handler with an
   * outside effect runs behind a savepoint, so a sibling's failure never repeats it.
   */
  batchSafe?: boolean;
}

export interface ScheduleContext {
  logger: Logger;
  db: Database;
  scheduledAt: Date;
}

/**
 * What a module's `<module>.jobs.ts` is given: it subscribes handlers and declares schedules. Modules do
 * this in their `registerJobs(jobs)`, called explicitly by the composition (src/compose.ts), never as a
 * side effect of constructing them.
 */
export interface JobRegistry {
  /** One delivery per (event, consumer): several consumers of one event each get it (fan-out). */
  subscribe<P>(eventName: string, consumer: string, handler: EventHandler<P>, opts?: SubscribeOptions): void;
  /** A recurring job; each due run is claimed by exactly one worker process. */
  schedule(name: string, spec: ScheduleSpec, run: (ctx: ScheduleContext) => Promise<void>): void;
}

export interface Subscription {
  eventName: string;
  consumer: string;
  handler: EventHandler;
  maxAttempts: number;
  backoffBaseMs: number;
  backoffMaxMs: number;
  batchSafe: boolean;
}

export interface Schedule {
  name: string;
  next: (from: Date) => Date;
  run: (ctx: ScheduleContext) => Promise<void>;
  /** Runs at least once a minute: its runs are logged at debug, not info. */
  frequent: boolean;
}

const CONSUMER = /^[a-z0-9_][a-z0-9_.-]{0,99}$/;

/** The consumers and schedules this process knows, checked as they are registered. */
export function createRegistry() {
  const byName = new Map<string, Subscription[]>();
  const byConsumer = new Map<string, Subscription>();
  const schedules = new Map<string, Schedule>();
  const registry: JobRegistry = {
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
        batchSafe: opts.batchSafe ?? false,
      };
      byConsumer.set(consumer, sub);
      byName.set(eventName, [...(byName.get(eventName) ?? []), sub]);
    },
    schedule(name, spec, run) {
      if (!CONSUMER.test(name)) throw new Error(`invalid schedule name "${name}"`);
      if (schedules.has(name)) throw new Error(`schedule "${name}" already exists`);
      schedules.set(name, { name, next: nextRunFn(spec), run, frequent: 'everyMs' in spec && spec.everyMs <= 60_000 });
    },
  };
  return { ...registry, byName, byConsumer, schedules };
}

export type Registry = ReturnType<typeof createRegistry>;
