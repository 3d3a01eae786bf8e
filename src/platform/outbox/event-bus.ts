import { hostname } from 'node:os';
import type { Logger } from 'pino';
import type { Config } from '../config.ts';
import type { Database } from '../db/database.ts';
import { newId } from '../ids.ts';
import { createBullTransport, type BullTransport } from './bullmq-transport.ts';
import { registerConsumers, touchConsumers } from './consumers.ts';

/** How often a running worker re-declares its consumers (well inside JOBS_CONSUMER_RETIRE_MS). */
const CONSUMER_TOUCH_MS = 60_000;
import { listDead, redrive } from './dead-letters.ts';
import { BATCH, type DeadJob } from './deliveries.ts';
import { createInProcessTransport } from './in-process-transport.ts';
import { createProcessor } from './processor.ts';
import { addToOutbox, OUTBOX_CHANNEL, type EventPublisher } from './publisher.ts';
import { createRegistry, type JobRegistry } from './registry.ts';
import { relayOnce } from './relay.ts';
import { cleanupJobRecords } from './retention.ts';
import { runDueSchedules, runScheduleIfDue } from './scheduler.ts';
import { sweepOnce } from './sweeper.ts';
import type { DeliveryJob, QueueView, Transport } from './transport.ts';

export type { DeadJob } from './deliveries.ts';
export type { EventHandler, HandlerContext, JobRegistry, ScheduleContext, SubscribeOptions } from './registry.ts';
export type { EventEnvelope, EventPublisher, NewEvent } from './publisher.ts';

/**
 * The async backbone's facade: modules publish in their transactions (EventPublisher) and register
 * handlers and schedules (JobRegistry); the worker role relays, processes, retries, dead-letters, sweeps
 * and runs schedules. Postgres is the system of record; each step lives in its own file beside this one.
 */
export interface EventBus extends EventPublisher, JobRegistry {
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

export function createEventBus(deps: EventBusDeps): EventBus {
  const { config, logger, db } = deps;
  const log = logger.child({ component: 'jobs' });
  const workerId = `${hostname()}:${process.pid}:${newId().slice(-8)}`;
  const registry = createRegistry({ maxHoldMs: config.jobsBackgroundHoldMaxMs });
  const processDelivery = createProcessor(db, registry, log, { concurrency: config.jobsConcurrency });
  let transport: Transport | undefined;
  let running = false;
  let wake: (() => void) | undefined;
  let stopListening: (() => Promise<void>) | undefined;
  const loops: Promise<void>[] = [];
  const sleepers = new Set<() => void>();

  /** A `background` consumer waits while a bulk run holds it (registry.holdBackground). */
  const heldFor = (consumer: string) => (registry.byConsumer.get(consumer)?.background ? registry.backgroundHeldMs() : 0);

  function getTransport(): Transport {
    transport ??= config.redisUrl
      ? createBullTransport({
          redisUrl: config.redisUrl,
          prefix: `${config.redisPrefix}bull`,
          concurrency: config.jobsConcurrency,
          stalledMs: config.jobsStalledMs,
          logger: log,
          heldFor,
        })
      : createInProcessTransport({ concurrency: config.jobsConcurrency, logger: log, heldFor });
    return transport;
  }

  async function dispatch(jobs: DeliveryJob[], repair = false): Promise<void> {
    if (jobs.length === 0) return;
    try {
      const t = getTransport();
      await (repair ? t.redispatch(jobs) : t.dispatch(jobs));
    } catch (err) {
      // Deliveries stay pending in Postgres; the sweeper dispatches them again.
      log.warn({ jobs: jobs.length, error: (err as Error).message }, 'dispatch failed; the sweeper will retry');
    }
  }

  /** A wake-up that arrives while the relay is busy is kept, so its next round starts at once. */
  let wakePending = false;
  function wakeRelay(): void {
    if (wake) wake();
    else wakePending = true;
  }

  function nudge(): void {
    // The caller's transaction has not committed yet; give it a moment before polling.
    setTimeout(wakeRelay, 2).unref();
  }

  const relay = () => relayOnce(db, registry, dispatch, config.jobsConsumerRetireMs);
  let touchedAt = 0;
  const sweep = async (olderThanMs = config.jobsSweepAfterMs) => {
    if (running && Date.now() - touchedAt > CONSUMER_TOUCH_MS) {
      touchedAt = Date.now();
      await touchConsumers(db, registry).catch((err) => log.warn({ error: (err as Error).message }, 'could not refresh consumers'));
    }
    return sweepOnce(db, log, (jobs) => dispatch(jobs, true), olderThanMs);
  };
  const runSchedules = () => runDueSchedules(db, registry, log, workerId);

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
      if (useWake && wakePending) {
        wakePending = false;
        continue;
      }
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

  const bus: EventBus = {
    workerId,
    async add(trx, event) {
      const envelope = await addToOutbox(trx, event);
      nudge();
      return envelope;
    },
    nudge,
    subscribe: registry.subscribe,
    schedule: registry.schedule,
    holdBackground: registry.holdBackground,
    async startWorker() {
      if (running) return;
      running = true;
      const t = getTransport();
      const backfilled = await registerConsumers(db, registry, config.jobsConsumerBackfillMs);
      await t.start([...registry.byConsumer.keys()], processDelivery);
      await dispatch(backfilled);
      // In-process queues do not survive a restart: pick up whatever an earlier run left pending.
      if (t.kind === 'in-process') await sweep(0).catch((err) => log.warn({ error: err.message }, 'startup sweep failed'));
      const sweepEvery = deps.sweepEveryMs ?? Math.max(100, Math.min(5_000, Math.floor(config.jobsSweepAfterMs / 2)));
      // Woken by events added in this process (nudge) and, on Postgres, by every commit that added one
      // anywhere (NOTIFY): the poll is only a safety net, so an idle relay barely touches the database.
      stopListening = db.listen?.(OUTBOX_CHANNEL, wakeRelay);
      loops.push(loop('relay', stopListening ? config.jobsIdlePollMs : config.jobsPollMs, relay, true));
      loops.push(loop('sweeper', sweepEvery, () => sweep()));
      // A loop per schedule: an audit sequencer pass over 10,000 new chains, or a long invoice run, must not hold
      // back the other schedules' occurrences (one loop running them in turn did: the invoice run's ticks waited
      // out a 15 s sequencer pass at a period end).
      for (const s of registry.schedules.values()) loops.push(loop(`schedule:${s.name}`, deps.scheduleTickMs ?? 1_000, () => runScheduleIfDue(db, s, log, workerId)));
      log.info({ workerId, transport: t.kind, consumers: registry.byConsumer.size, schedules: registry.schedules.size }, 'worker started');
    },
    async stopWorker() {
      if (!running) return;
      running = false;
      await stopListening?.();
      stopListening = undefined;
      for (const wakeUp of [...sleepers]) wakeUp();
      await Promise.allSettled(loops.splice(0));
      await transport?.stop();
      log.info({ workerId }, 'worker stopped');
    },
    relayOnce: relay,
    sweepOnce: sweep,
    runDueSchedules: runSchedules,
    listDead: (opts) => listDead(db, opts),
    async redrive(deliveryId) {
      const job = await redrive(db, deliveryId, running ? (jobs) => dispatch(jobs, true) : undefined);
      log.info({ deliveryId, consumer: job.consumer, eventId: job.eventId }, 'dead job redriven');
      return job;
    },
    async inspect() {
      const t = getTransport();
      return { transport: t.kind, queues: await t.inspect([...registry.byConsumer.keys()]) };
    },
    consumers: () => [...registry.byConsumer.keys()],
    bull() {
      return config.redisUrl ? (getTransport() as BullTransport) : undefined;
    },
    async close() {
      await bus.stopWorker();
      await transport?.close();
    },
  };
  bus.schedule('platform.jobs_cleanup', { cron: '17 3 * * *' }, cleanupJobRecords);
  return bus;
}
