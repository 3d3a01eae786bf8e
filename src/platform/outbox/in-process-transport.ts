import type { Logger } from 'pino';
import type { DeliveryJob, Processor, Transport } from './transport.ts';

const keyOf = (job: DeliveryJob) => `${job.consumer}\u0000${job.event.id}`;

/**
 * The embedded default: an in-memory queue with bounded concurrency. Queued jobs vanish with the process;
 * their deliveries stay 'pending' in Postgres and the worker re-dispatches them when it starts again.
 */
export function createInProcessTransport(opts: { concurrency: number; logger: Logger }): Transport {
  const queue = new Map<string, DeliveryJob>();
  const active = new Map<string, Promise<void>>();
  const delayed = new Map<string, NodeJS.Timeout>();
  let processor: Processor | undefined;
  let consumers = new Set<string>();
  let stopped = false;

  function pump(): void {
    if (!processor || stopped) return;
    for (const [key, job] of queue) {
      if (active.size >= opts.concurrency) return;
      if (!consumers.has(job.consumer) || active.has(key)) continue;
      queue.delete(key);
      const run = runJob(key, job).finally(() => {
        active.delete(key);
        setImmediate(pump);
      });
      active.set(key, run);
    }
  }

  async function runJob(key: string, job: DeliveryJob): Promise<void> {
    try {
      const outcome = await processor!(job);
      if (outcome.retryAfterMs !== undefined && !stopped) {
        const timer = setTimeout(() => {
          delayed.delete(key);
          enqueue(job);
        }, outcome.retryAfterMs);
        timer.unref();
        delayed.set(key, timer);
      }
    } catch (err) {
      // The processor records failures itself; anything reaching here is left for the sweeper.
      opts.logger.error({ consumer: job.consumer, eventId: job.event.id, error: (err as Error).message }, 'job processing crashed');
    }
  }

  function enqueue(job: DeliveryJob): void {
    // A consumer this process does not run (one a newer worker declared): its delivery stays pending in
    // Postgres for a process that does; holding it here would only grow the map.
    if (processor && !consumers.has(job.consumer)) return;
    const key = keyOf(job);
    if (queue.has(key) || delayed.has(key)) return;
    queue.set(key, job);
    setImmediate(pump);
  }

  return {
    kind: 'in-process',
    async dispatch(jobs) {
      for (const job of jobs) enqueue(job);
    },
    // Nothing to repair in memory: a job is either queued, delayed, running, or gone.
    async redispatch(jobs) {
      for (const job of jobs) enqueue(job);
    },
    async start(names, p) {
      processor = p;
      consumers = new Set(names);
      stopped = false;
      pump();
    },
    async stop() {
      stopped = true;
      for (const timer of delayed.values()) clearTimeout(timer);
      delayed.clear();
      queue.clear();
      await Promise.allSettled([...active.values()]);
    },
    async close() {},
    async inspect(names) {
      return names.map((consumer) => {
        let waiting = 0;
        let running = 0;
        let later = 0;
        for (const job of queue.values()) if (job.consumer === consumer) waiting++;
        for (const key of active.keys()) if (key.startsWith(`${consumer}\u0000`)) running++;
        for (const key of delayed.keys()) if (key.startsWith(`${consumer}\u0000`)) later++;
        return { consumer, waiting, active: running, delayed: later };
      });
    },
  };
}
