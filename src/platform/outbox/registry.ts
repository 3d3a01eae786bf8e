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
  /**
   * Follow-up work that may wait a few seconds while a bulk run has this worker (`holdBackground`): a
   * finalized invoice's PDF, its payment collection, billing webhooks. Its deliveries stay pending and run
   * when the hold lapses; nothing is skipped. Default false.
   */
  background?: boolean;
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
  /**
   * Holds this process's `background` consumers back for `ms` (call again to extend), so a bulk run (the
   * invoice run at a period end) gets the worker's CPU and connections before the follow-up work it creates;
   * `holdBackground(0)` releases the hold when the run is done.
   * One episode of holding (renewals with short lapses between them) lasts at most `JOBS_BACKGROUND_HOLD_MAX_MS`
   * and is followed by as long without holds, so background work is delayed, never starved; 0 turns holding off.
   */
  holdBackground(ms: number): void;
}

export interface Subscription {
  eventName: string;
  consumer: string;
  handler: EventHandler;
  maxAttempts: number;
  backoffBaseMs: number;
  backoffMaxMs: number;
  batchSafe: boolean;
  background: boolean;
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
export function createRegistry(opts: { maxHoldMs?: number; now?: () => number } = {}) {
  const byName = new Map<string, Subscription[]>();
  const byConsumer = new Map<string, Subscription>();
  const schedules = new Map<string, Schedule>();
  const maxHoldMs = opts.maxHoldMs ?? 60_000;
  const now = opts.now ?? Date.now;
  /** The current hold episode: when it began and until when background consumers wait. */
  let episodeStart = 0;
  let heldUntil = 0;
  /** Milliseconds background consumers still wait (0: not held). */
  const backgroundHeldMs = () => Math.max(0, heldUntil - now());
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
        background: opts.background ?? false,
      };
      byConsumer.set(consumer, sub);
      byName.set(eventName, [...(byName.get(eventName) ?? []), sub]);
    },
    schedule(name, spec, run) {
      if (!CONSUMER.test(name)) throw new Error(`invalid schedule name "${name}"`);
      if (schedules.has(name)) throw new Error(`schedule "${name}" already exists`);
      schedules.set(name, { name, next: nextRunFn(spec), run, frequent: 'everyMs' in spec && spec.everyMs <= 60_000 });
    },
    holdBackground(ms) {
      const t = now();
      if (ms <= 0) {
        heldUntil = Math.min(heldUntil, t); // released: the bulk run is done
        return;
      }
      if (maxHoldMs <= 0) return;
      // Short lapses between renewals stay in one episode; a new one starts only after a full cooldown.
      if (episodeStart === 0 || t - heldUntil >= maxHoldMs) episodeStart = t;
      const end = episodeStart + maxHoldMs;
      if (t >= end) return; // this episode is used up: cooling down
      heldUntil = Math.max(heldUntil, Math.min(t + ms, end));
    },
  };
  return { ...registry, byName, byConsumer, schedules, backgroundHeldMs };
}

export type Registry = ReturnType<typeof createRegistry>;
