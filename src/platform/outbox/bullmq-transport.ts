import { DelayedError, Queue, Worker, type Job } from 'bullmq';
import { Redis } from 'ioredis';
import type { Logger } from 'pino';
import type { DeliveryJob, Processor, QueueView, Transport } from './transport.ts';

export interface BullTransportOptions {
  redisUrl: string;
  /** Key prefix (config.redisPrefix + 'bull'), so deployments and test runs sharing a Redis never collide. */
  prefix: string;
  concurrency: number;
  /** Lock duration / stalled-check interval: how soon a job held by a killed worker is handed out again. */
  stalledMs: number;
  logger: Logger;
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

/** BullMQ over its own ioredis connections (maxRetriesPerRequest: null, as BullMQ requires). One queue per consumer, jobId = event id. */
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
      await transport.dispatch(jobs);
    },
    async dispatch(jobs) {
      const byConsumer = new Map<string, DeliveryJob[]>();
      for (const job of jobs) byConsumer.set(job.consumer, [...(byConsumer.get(job.consumer) ?? []), job]);
      await withTimeout(
        Promise.all(
          [...byConsumer].map(([consumer, list]) =>
            queueFor(consumer).addBulk(
              list.map((job) => ({
                name: job.event.name,
                data: job,
                // Completed and failed jobs leave Redis at once: Postgres holds their outcome, and a
                // re-dispatch (sweeper, redrive) must not be swallowed by a finished job with the same id.
                opts: { jobId: job.event.id, removeOnComplete: true, removeOnFail: true },
              })),
            ),
          ),
        ),
        opts.dispatchTimeoutMs ?? 3_000,
        'dispatch to Redis',
      );
    },
    async start(consumers, processor: Processor) {
      for (const consumer of consumers) {
        const connection = connect(`plinth-jobs-worker-${consumer}`);
        connections.push(connection);
        const worker = new Worker(
          consumer,
          async (job: Job<DeliveryJob>, token?: string) => {
            const outcome = await processor(job.data);
            if (outcome.retryAfterMs !== undefined) {
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
