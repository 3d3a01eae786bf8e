/**
 * "Count in memory, write once per interval": the shared shape of every per-process counter that would
 * otherwise cost a write per request (flag exposures, deprecated-route calls, tenant costs, billing's
 * API-request meter). Counts are numeric fields per string key, added synchronously on the hot path.
 *
 * A flush takes everything counted so far as one **batch** with an id (`<instance>:<sequence>`) and hands
 * it to the writer. If the writer throws, the batch is kept **as it was, under the same id**, and the next
 * flush writes it again before the newer counts. Writers that add with an upsert lose nothing to an
 * outage; writers that need exactly-once (billing's usage ledger) make the write idempotent by the batch
 * id, so a retried flush whose first attempt committed after all (a lost reply) does not count twice.
 *
 * Lost on a crash: whatever was counted since the last successful flush (at most one interval's worth,
 * plus batches still failing); a graceful stop flushes once more (`stop()`).
 */
import { randomUUID } from 'node:crypto';

export type Counts<F extends string> = Record<F, number>;

export interface CounterBatch<F extends string> {
  /** Stable across retries of the same batch: `<instance>:<sequence>`. */
  id: string;
  counts: Map<string, Counts<F>>;
}

export type BatchWriter<F extends string> = (batch: CounterBatch<F>) => Promise<void>;

export interface IntervalCounter<F extends string> {
  /** Adds to the key's fields (missing fields add 0). Synchronous, allocation-free after the key's first use. */
  add(key: string, delta: Partial<Counts<F>>): void;
  /** What was counted and not yet written (unflushed + failed batches), per key: for local reads. */
  pending(key: string): Counts<F> | undefined;
  /** Writes failed batches first (same ids), then the counts since the last flush; resolves to the batches written. Rethrows the writer's error. */
  flush(): Promise<number>;
  /** Starts flushing every `ms` (unref'd timer; errors are left to the writer to report). */
  start(ms: number): void;
  /** Stops the timer and flushes once more (errors swallowed: shutdown must not hang on a dead database). */
  stop(): Promise<void>;
  /** Number of keys counted since the last flush, and batches waiting for a retry. */
  readonly size: { keys: number; failedBatches: number };
}

export function createIntervalCounter<F extends string>(opts: {
  fields: readonly F[];
  write: BatchWriter<F>;
  /** Identifies this process's batches (default: a random id per counter). */
  instanceId?: string;
}): IntervalCounter<F> {
  const instance = opts.instanceId ?? randomUUID();
  let seq = 0;
  let counts = new Map<string, Counts<F>>();
  const failed: CounterBatch<F>[] = [];
  let timer: NodeJS.Timeout | undefined;
  let running: Promise<unknown> | undefined;
  const zero = (): Counts<F> => Object.fromEntries(opts.fields.map((f) => [f, 0])) as Counts<F>;

  async function flushOnce(): Promise<number> {
    let written = 0;
    while (failed.length > 0) {
      await opts.write(failed[0]!);
      failed.shift();
      written++;
    }
    if (counts.size === 0) return written;
    const batch: CounterBatch<F> = { id: `${instance}:${++seq}`, counts };
    counts = new Map();
    try {
      await opts.write(batch);
    } catch (err) {
      failed.push(batch);
      throw err;
    }
    return written + 1;
  }

  const counter: IntervalCounter<F> = {
    add(key, delta) {
      let c = counts.get(key);
      if (!c) counts.set(key, (c = zero()));
      for (const f in delta) c[f as F] += delta[f as F] ?? 0;
    },
    pending(key) {
      const sources = [counts.get(key), ...failed.map((b) => b.counts.get(key))].filter((c): c is Counts<F> => c !== undefined);
      if (sources.length === 0) return undefined;
      const sum = zero();
      for (const c of sources) for (const f of opts.fields) sum[f] += c[f];
      return sum;
    },
    flush() {
      // One flush at a time: a timer tick during a slow write must not write the failed batch twice at once.
      // With none running it starts at once (takes the counts now); else after the running one.
      const next = running ? running.then(flushOnce) : flushOnce();
      const settled = next.then(
        () => {},
        () => {},
      );
      running = settled;
      void settled.then(() => {
        if (running === settled) running = undefined;
      });
      return next;
    },
    start(ms) {
      if (timer) return;
      timer = setInterval(() => void counter.flush().catch(() => {}), ms);
      timer.unref();
    },
    async stop() {
      if (timer) clearInterval(timer);
      timer = undefined;
      await counter.flush().catch(() => {});
    },
    get size() {
      return { keys: counts.size, failedBatches: failed.length };
    },
  };
  return counter;
}
