import { DelayedError, Queue, Worker, type Job } from 'bullmq';
import { Redis } from 'ioredis';
import type { Logger } from 'pino';
import { PROCESS_BATCH, type DeliveryJob, type HeldFor, type Processor, type QueueView, type Transport } from './transport.ts';

/** A BullMQ job carrying several deliveries of one consumer. */
interface BatchData {
  batch: DeliveryJob[];
}
const BATCH_JOB = 'plinth.batch';

function byConsumer(jobs: DeliveryJob[]): Map<string, DeliveryJob[]> {
  const map = new Map<string, DeliveryJob[]>();
  for (const job of jobs) {
    const list = map.get(job.consumer);
    if (list) list.push(job);
    else map.set(job.consumer, [job]);
  }
  return map;
}

/**
 * One delivery as its own job. jobId = event id (one queue per consumer), so re-adding a delivery that is
 * still queued is a no-op. Completed and failed jobs leave Redis at once: Postgres holds their outcome,
 * and a re-dispatch (sweeper, redrive) must not be swallowed by a finished job with the same id.
 */
function single(job: DeliveryJob) {
  return { name: job.event.name, data: job, opts: { jobId: job.event.id, removeOnComplete: true, removeOnFail: true } as { jobId: string; removeOnComplete: boolean; removeOnFail: boolean; delay?: number } };
}

export interface BullTransportOptions {
  redisUrl: string;
  /** Key prefix (config.redisPrefix + 'bull'), so deployments and test runs sharing a Redis never collide. */
  prefix: string;
  concurrency: number;
  /** Lock duration / stalled-check interval: how soon a job held by a killed worker is handed out again. */
  stalledMs: number;
  logger: Logger;
  /** A consumer held back by a bulk run: its worker waits before processing (jobs stay active, locks extended). */
  heldFor?: HeldFor;
  /** A dispatch that cannot reach Redis fails after this instead of hanging; the sweeper retries later. */
  dispatchTimeoutMs?: number;
}

export interface BullTransport extends Transport {
  queues(consumers: string[]): Queue[];
}

function withTimeout<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} timed out after ${ms} ms`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/**
 * BullMQ over its own ioredis connections (maxRetriesPerRequest: null, as BullMQ requires). One queue per
 * consumer; the relay's deliveries travel in batch jobs, re-dispatches and retries as single jobs whose
 * jobId is the event id. A worker takes both shapes (single jobs queued by an older version included).
 */
export function createBullTransport(opts: BullTransportOptions): BullTransport {
  const connect = (name: string) => {
    const r = new Redis(opts.redisUrl, { maxRetriesPerRequest: null, connectionName: name, enableReadyCheck: true });
    r.on('error', () => {});
    return r;
  };
  let producer: Redis | undefined;
  const queueMap = new Map<string, Queue>();
  const workers: Worker[] = [];
  const connections: Redis[] = [];
  /** Stopping: a held job stops waiting (and runs), so shutdown does not wait out a hold. */
  let closing = false;

  function queueFor(consumer: string): Queue {
    let q = queueMap.get(consumer);
    if (!q) {
      producer ??= connect('plinth-jobs-producer');
      q = new Queue(consumer, { connection: producer, prefix: opts.prefix });
      q.on('error', (err) => opts.logger.warn({ queue: consumer, error: err.message }, 'queue error'));
      queueMap.set(consumer, q);
    }
    return q;
  }

  /**
   * BullMQ refuses to add a job whose id it still has a record of, whatever list (if any) holds it. A job
   * that is in no list ('unknown': its queue entry was lost, e.g. to eviction or a partial flush) or that
   * finished (completed/failed records kept against our options) would never run again: its record goes
   * first. Waiting, delayed and active jobs are left alone: they will run or are running.
   */
  async function dropOrphans(jobs: DeliveryJob[]): Promise<void> {
    await Promise.all(
      jobs.map(async (job) => {
        const queue = queueFor(job.consumer);
        const state = await queue.getJobState(job.event.id);
        if (state === 'unknown' || state === 'completed' || state === 'failed') {
          const removed = await queue.remove(job.event.id);
          if (removed && state === 'unknown') {
            opts.logger.warn({ queue: job.consumer, jobId: job.event.id }, 'job record without a queue entry repaired');
          }
        }
      }),
    );
  }

  const transport: BullTransport = {
    kind: 'bullmq',
    async redispatch(jobs) {
      if (jobs.length === 0) return;
      await withTimeout(dropOrphans(jobs), opts.dispatchTimeoutMs ?? 3_000, 'queue repair');
      // One job per delivery, jobId = event id: a delivery still queued is not queued twice.
      await withTimeout(
        Promise.all([...byConsumer(jobs)].map(([consumer, list]) => queueFor(consumer).addBulk(list.map(single)))),
        opts.dispatchTimeoutMs ?? 3_000,
        'dispatch to Redis',
      );
    },
    /**
     * What the relay hands over: per consumer, one BullMQ job per PROCESS_BATCH deliveries (one queue
     * entry, one fetch, one transaction to process them all) instead of one job per delivery.
     */
    async dispatch(jobs) {
      await withTimeout(
        Promise.all(
          [...byConsumer(jobs)].map(([consumer, list]) => {
            const batches: DeliveryJob[][] = [];
            for (let i = 0; i < list.length; i += PROCESS_BATCH) batches.push(list.slice(i, i + PROCESS_BATCH));
            return queueFor(consumer).addBulk(
              batches.map((batch) =>
                batch.length === 1
                  ? single(batch[0]!)
                  : { name: BATCH_JOB, data: { batch } satisfies BatchData, opts: { removeOnComplete: true, removeOnFail: true } },
              ),
            );
          }),
        ),
        opts.dispatchTimeoutMs ?? 3_000,
        'dispatch to Redis',
      );
    },
    async start(consumers, processor: Processor) {
      closing = false;
      for (const consumer of consumers) {
        const connection = connect(`plinth-jobs-worker-${consumer}`);
        connections.push(connection);
        const worker = new Worker(
          consumer,
          async (job: Job<DeliveryJob | BatchData>, token?: string) => {
            // Held: this consumer's jobs wait (at most `concurrency` of them, the worker fetches no more).
            for (let held = opts.heldFor?.(consumer) ?? 0; held > 0 && !closing; held = opts.heldFor?.(consumer) ?? 0) {
              await new Promise((r) => setTimeout(r, Math.min(held, 500)));
            }
            const data = job.data;
            if ('batch' in data) {
              const outcomes = await processor(data.batch);
              // A delivery to retry gets its own delayed job (jobId = event id); the batch itself is done.
              const retries = data.batch.flatMap((d, i) => {
                const after = outcomes[i]?.retryAfterMs;
                return after === undefined ? [] : [{ ...single(d), opts: { ...single(d).opts, delay: after } }];
              });
              if (retries.length > 0) await queueFor(consumer).addBulk(retries);
              return;
            }
            // One delivery: a sweeper re-dispatch, a retry, or a job queued by a version before batches.
            const [outcome] = await processor([data]);
            if (outcome?.retryAfterMs !== undefined) {
              await job.moveToDelayed(Date.now() + outcome.retryAfterMs, token);
              throw new DelayedError();
            }
          },
          {
            connection,
            prefix: opts.prefix,
            concurrency: opts.concurrency,
            lockDuration: opts.stalledMs,
            stalledInterval: opts.stalledMs,
            maxStalledCount: 10,
          },
        );
        worker.on('error', (err) => opts.logger.warn({ queue: consumer, error: err.message }, 'worker error'));
        workers.push(worker);
      }
    },
    async stop() {
      closing = true;
      // close() waits for active jobs to finish; waiting ones stay in Redis for another worker.
      await Promise.allSettled(workers.map((w) => w.close()));
      workers.length = 0;
    },
    async close() {
      await Promise.allSettled([...queueMap.values()].map((q) => q.close()));
      queueMap.clear();
      for (const c of [...connections, ...(producer ? [producer] : [])]) c.disconnect();
      connections.length = 0;
      producer = undefined;
    },
    async inspect(consumers) {
      return withTimeout(
        Promise.all(
          consumers.map(async (consumer) => {
            const counts = await queueFor(consumer).getJobCounts('waiting', 'active', 'delayed');
            return { consumer, waiting: counts.waiting ?? 0, active: counts.active ?? 0, delayed: counts.delayed ?? 0 } satisfies QueueView;
          }),
        ),
        3_000,
        'queue inspection',
      );
    },
    queues: (consumers) => consumers.map(queueFor),
  };
  return transport;
}
