import { describe, expect, it } from 'vitest';
import { createIntervalCounter, type CounterBatch } from './interval-counter.ts';

describe('interval counter (count in memory, write per interval)', () => {
  it('a failed flush keeps its batch, same id, and writes it before newer counts; nothing is lost or doubled', async () => {
    const written: Array<{ id: string; counts: Record<string, { n: number; e: number }> }> = [];
    let down = false;
    const counter = createIntervalCounter({
      fields: ['n', 'e'] as const,
      instanceId: 'i1',
      write: async (b: CounterBatch<'n' | 'e'>) => {
        if (down) throw new Error('database down');
        written.push({ id: b.id, counts: Object.fromEntries(b.counts) });
      },
    });
    counter.add('a', { n: 1 });
    counter.add('a', { n: 1, e: 1 });
    counter.add('b', { n: 5 });
    down = true;
    await expect(counter.flush()).rejects.toThrow('database down');
    expect(counter.size).toEqual({ keys: 0, failedBatches: 1 });
    // Still visible to local readers while unwritten.
    counter.add('a', { n: 10 });
    expect(counter.pending('a')).toEqual({ n: 12, e: 1 });
    await expect(counter.flush()).rejects.toThrow('database down');
    // The newer counts were not taken while the older batch is stuck (order is kept).
    expect(counter.size).toEqual({ keys: 1, failedBatches: 1 });
    down = false;
    expect(await counter.flush()).toBe(2);
    expect(written).toEqual([
      { id: 'i1:1', counts: { a: { n: 2, e: 1 }, b: { n: 5, e: 0 } } },
      { id: 'i1:2', counts: { a: { n: 10, e: 0 } } },
    ]);
    expect(counter.pending('a')).toBeUndefined();
    expect(await counter.flush()).toBe(0);
  });

  it('a batch that committed but whose reply was lost is retried under the same id (an idempotent writer counts it once)', async () => {
    const ledger = new Map<string, number>();
    let loseReply = true;
    const counter = createIntervalCounter({
      fields: ['requests'] as const,
      write: async (b) => {
        for (const [org, c] of b.counts) if (!ledger.has(`${org}:${b.id}`)) ledger.set(`${org}:${b.id}`, c.requests);
        if (loseReply) {
          loseReply = false;
          throw new Error('connection reset after COMMIT');
        }
      },
    });
    for (let i = 0; i < 7; i++) counter.add('org', { requests: 1 });
    await expect(counter.flush()).rejects.toThrow();
    counter.add('org', { requests: 1 });
    await counter.flush();
    expect([...ledger.values()].reduce((a, b) => a + b, 0)).toBe(8);
  });

  it('concurrent flushes run one at a time; stop() flushes once more and swallows a failure', async () => {
    let inFlight = 0;
    let maxInFlight = 0;
    const seen: number[] = [];
    let fail = false;
    const counter = createIntervalCounter({
      fields: ['n'] as const,
      write: async (b) => {
        if (fail) throw new Error('down');
        inFlight++;
        maxInFlight = Math.max(maxInFlight, inFlight);
        await new Promise((r) => setTimeout(r, 5));
        seen.push(b.counts.get('k')!.n);
        inFlight--;
      },
    });
    counter.add('k', { n: 1 });
    const first = counter.flush();
    counter.add('k', { n: 2 });
    const second = counter.flush();
    await Promise.all([first, second]);
    expect(maxInFlight).toBe(1);
    expect(seen).toEqual([1, 2]);
    counter.start(60_000);
    counter.add('k', { n: 3 });
    await counter.stop();
    expect(seen).toEqual([1, 2, 3]);
    fail = true;
    counter.add('k', { n: 4 });
    await expect(counter.stop()).resolves.toBeUndefined();
    expect(counter.pending('k')).toEqual({ n: 4 });
  });
});
