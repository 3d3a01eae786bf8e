import { describe, expect, it } from 'vitest';
import { createMemoryInvalidationBus, type InvalidationBus } from './invalidation-bus.ts';
import { createLocalCache } from './local-cache.ts';

function deferred<T>() {
  let resolve!: (v: T) => void;
  const promise = new Promise<T>((r) => (resolve = r));
  return { promise, resolve };
}

/** A memory bus whose liveness the test controls (reset on going live, as the Redis bus does). */
function switchableBus() {
  const inner = createMemoryInvalidationBus();
  const listeners: Array<{ onReset(): void }> = [];
  let live = true;
  const bus: InvalidationBus = {
    ...inner,
    subscribe(topic, l) {
      listeners.push(l);
      return inner.subscribe(topic, l);
    },
    live: () => live,
  };
  return {
    bus,
    set(v: boolean) {
      live = v;
      if (!v) for (const l of listeners) l.onReset();
    },
  };
}

describe('process-local cache with cross-process invalidation', () => {
  it('hits after one load; another cache on the bus drops the key when it is invalidated; null is never cached', async () => {
    const bus = createMemoryInvalidationBus();
    const a = createLocalCache<string>({ name: 't1', bus, maxAgeMs: 60_000 });
    const b = createLocalCache<string>({ name: 't1', bus, maxAgeMs: 60_000 });
    let loads = 0;
    const load = (v: string | null) => async () => (loads++, v);
    expect(await b.get('k', load('v1'))).toBe('v1');
    expect(await b.get('k', load('never'))).toBe('v1');
    expect(loads).toBe(1);
    await a.invalidate(['k']);
    expect(await b.get('k', load('v2'))).toBe('v2');
    expect(await b.get('gone', load(null))).toBeNull();
    expect(await b.get('gone', load('back'))).toBe('back');
    // other topics are other caches
    const c = createLocalCache<string>({ name: 't2', bus, maxAgeMs: 60_000 });
    expect(await c.get('k', load('c'))).toBe('c');
    await a.invalidate(['k']);
    expect(await c.get('k', load('not reloaded'))).toBe('c');
  });

  it('a load in flight when its key is invalidated does not store what it read (no stale write-back)', async () => {
    const bus = createMemoryInvalidationBus();
    const cache = createLocalCache<string>({ name: 't3', bus, maxAgeMs: 60_000 });
    const slow = deferred<string>();
    const started = deferred<void>();
    const first = cache.get('k', () => (started.resolve(), slow.promise));
    await started.promise; // the old row is being read…
    await cache.invalidate(['k']); // …when the change commits and its invalidation arrives
    slow.resolve('old');
    expect(await first).toBe('old'); // that caller gets what it read…
    expect(await cache.get('k', async () => 'new')).toBe('new'); // …but nobody after it
  });

  it('stale-while-revalidate in the second half of the lifetime; never served past maxAgeMs', async () => {
    const bus = createMemoryInvalidationBus();
    const cache = createLocalCache<number>({ name: 't4', bus, maxAgeMs: 200 });
    let n = 0;
    const load = async () => ++n;
    expect(await cache.get('k', load)).toBe(1);
    await new Promise((r) => setTimeout(r, 120)); // stale half
    expect(await cache.get('k', load)).toBe(1); // served once more…
    await new Promise((r) => setTimeout(r, 5));
    expect(await cache.get('k', load)).toBe(2); // …while the background reload replaced it
    const hang = deferred<number>();
    await new Promise((r) => setTimeout(r, 120));
    // A reload that never finishes: the stale entry is served until maxAgeMs, then the caller waits.
    const served = await cache.get('k', () => hang.promise);
    expect(served).toBe(2);
    await new Promise((r) => setTimeout(r, 100));
    const waiting = cache.get('k', () => hang.promise);
    hang.resolve(3);
    expect(await waiting).toBe(3);
  });

  it('while the bus is deaf nothing is served or stored, and beforeLoad runs on every miss', async () => {
    const { bus, set } = switchableBus();
    const cache = createLocalCache<string>({ name: 't5', bus, maxAgeMs: 60_000 });
    let loads = 0;
    let guarded = 0;
    const get = () => cache.get('k', async () => `v${++loads}`, { beforeLoad: async () => void guarded++ });
    expect(await get()).toBe('v1');
    expect(await get()).toBe('v1');
    set(false);
    expect(await get()).toBe('v2');
    expect(await get()).toBe('v3');
    set(true);
    expect(await get()).toBe('v4');
    expect(await get()).toBe('v4');
    expect(guarded).toBe(4);
  });
});
