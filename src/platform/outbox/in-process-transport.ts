import type { Logger } from 'pino';
import { PROCESS_BATCH, type DeliveryJob, type HeldFor, type Processor, type Transport } from './transport.ts';

const keyOf = (job: DeliveryJob) => `${job.consumer}\u0000${job.event.id}`;

/**
 * The embedded default: an in-memory queue, processed in batches of up to PROCESS_BATCH jobs, at most
 * `concurrency` batches at a time. Queued jobs vanish with the process;
 * their deliveries stay 'pending' in Postgres and the worker re-dispatches them when it starts again.
 */
export function createInProcessTransport(opts: { concurrency: number; logger: Logger; heldFor?: HeldFor }): Transport {
  const queue = new Map<string, DeliveryJob>();
  /** Keys of the jobs being processed, and the batches processing them (at most `concurrency`). */
  const active = new Set<string>();
  const runs = new Set<Promise<void>>();
  const delayed = new Map<string, NodeJS.Timeout>();
  let processor: Processor | undefined;
  let consumers = new Set<string>();
  let stopped = false;
  /** A pump when the earliest hold on a skipped consumer lapses. */
  let heldTimer: NodeJS.Timeout | undefined;

  function pump(): void {
    if (!processor || stopped) return;
    while (runs.size < opts.concurrency) {
      const batch = takeBatch();
      if (batch.length === 0) return;
      const run: Promise<void> = runBatch(batch).finally(() => {
        for (const [key] of batch) active.delete(key);
        runs.delete(run);
        setImmediate(pump);
      });
      runs.add(run);
    }
  }

  /** Up to PROCESS_BATCH queued jobs, oldest first, skipping any whose previous run is still active or whose consumer is held. */
  function takeBatch(): Array<[string, DeliveryJob]> {
    const batch: Array<[string, DeliveryJob]> = [];
    let wakeIn = Infinity;
    for (const [key, job] of queue) {
      if (!consumers.has(job.consumer) || active.has(key)) continue;
      const held = opts.heldFor?.(job.consumer) ?? 0;
      if (held > 0) {
        wakeIn = Math.min(wakeIn, held);
        continue;
      }
      queue.delete(key);
      active.add(key);
      batch.push([key, job]);
      if (batch.length >= PROCESS_BATCH) break;
    }
    if (wakeIn < Infinity && !heldTimer) {
      heldTimer = setTimeout(() => {
        heldTimer = undefined;
        pump();
      }, wakeIn + 5);
      heldTimer.unref();
    }
    return batch;
  }

  async function runBatch(batch: Array<[string, DeliveryJob]>): Promise<void> {
    try {
      const outcomes = await processor!(batch.map(([, job]) => job));
      outcomes.forEach((outcome, i) => {
        if (outcome.retryAfterMs === undefined || stopped) return;
        const [key, job] = batch[i]!;
        const timer = setTimeout(() => {
          delayed.delete(key);
          enqueue(job);
        }, outcome.retryAfterMs);
        timer.unref();
        delayed.set(key, timer);
      });
    } catch (err) {
      // The processor records failures itself; anything reaching here is left for the sweeper.
      opts.logger.error({ jobs: batch.length, error: (err as Error).message }, 'job processing crashed');
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
      if (heldTimer) clearTimeout(heldTimer);
      for (const timer of delayed.values()) clearTimeout(timer);
      delayed.clear();
      queue.clear();
      await Promise.allSettled([...runs]);
    },
    async close() {},
    async inspect(names) {
      return names.map((consumer) => {
        let waiting = 0;
        let running = 0;
        let later = 0;
        for (const job of queue.values()) if (job.consumer === consumer) waiting++;
        for (const key of active) if (key.startsWith(`${consumer}\u0000`)) running++;
        for (const key of delayed.keys()) if (key.startsWith(`${consumer}\u0000`)) later++;
        return { consumer, waiting, active: running, delayed: later };
      });
    },
  };
}
