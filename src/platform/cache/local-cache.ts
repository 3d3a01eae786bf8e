import { cacheRequests } from '../observability/metrics.ts';
import type { InvalidationBus } from './invalidation-bus.ts';
import { growingLru } from './lru.ts';

export interface LocalCacheOptions {
  /** Metric label and the bus topic its invalidations travel on. */
  name: string;
  bus: InvalidationBus;
  /**
   * No entry is ever served older than this, measured from the moment its load started: the staleness
   * bound when an invalidation is lost. Fresh for the first half; in the second half it is served once
   * more while a background reload replaces it (stale-while-revalidate).
   */
  maxAgeMs: number;
  max?: number;
}

export interface LocalCache<T> {
  /**
   * The cached value, or loader()'s. `null` is never cached (a credential that is unknown now may be valid
   * a moment later). `beforeLoad` runs only when the caller has to wait for the loader (a miss).
   */
  get(key: string, loader: () => Promise<T | null>, opts?: { beforeLoad?: () => Promise<void> }): Promise<T | null>;
  /** After commit: drops the keys here at once and in every other process through the bus. */
  invalidate(keys: string[]): Promise<boolean>;
  close(): void;
}

interface Entry<T> {
  value: T;
  bornAt: number;
}

/**
 * A process-local cache for values every request needs (sessions, memberships), with cross-process
 * invalidation. Three rules keep it safe:
 * - bounded age: an entry is never served past `maxAgeMs` after its load began;
 * - no stale write-back: a load that was in flight when its key was invalidated (or the bus reset) does
 *   not store what it read;
 * - deaf means bypass: while the bus is not subscribed (Redis down, reconnecting) nothing is served or
 *   stored; every call goes to the loader (the record).
 */
export function createLocalCache<T>(opts: LocalCacheOptions): LocalCache<T> {
  const entries = growingLru<string, Entry<T>>({ entries: opts.max ?? 50_000, ttl: Math.max(1, opts.maxAgeMs) });
  // One token per load in flight; invalidation removes it, so the load knows not to store.
  let loading = new Map<string, object>();
  const inflight = new Map<string, Promise<T | null>>();
  const freshMs = opts.maxAgeMs / 2;

  const unsubscribe = opts.bus.subscribe(opts.name, {
    onKeys(keys) {
      for (const k of keys) {
        entries.delete(k);
        loading.delete(k);
        inflight.delete(k);
      }
    },
    onReset() {
      entries.clear();
      loading = new Map();
      inflight.clear();
    },
  });

  function load(key: string, loader: () => Promise<T | null>): Promise<T | null> {
    const pending = inflight.get(key);
    if (pending) return pending;
    const token = {};
    const bornAt = Date.now();
    loading.set(key, token);
    const p = loader()
      .then((value) => {
        if (value !== null && loading.get(key) === token && opts.bus.live() && Date.now() - bornAt < opts.maxAgeMs) {
          entries.set(key, { value, bornAt }, { ttl: Math.max(1, opts.maxAgeMs - (Date.now() - bornAt)) });
        }
        return value;
      })
      .finally(() => {
        if (loading.get(key) === token) loading.delete(key);
        if (inflight.get(key) === p) inflight.delete(key);
      });
    inflight.set(key, p);
    return p;
  }

  return {
    async get(key, loader, getOpts) {
      if (opts.maxAgeMs <= 0 || !opts.bus.live()) {
        cacheRequests.inc({ cache: opts.name, result: 'miss' });
        await getOpts?.beforeLoad?.();
        return loader();
      }
      const hit = entries.get(key);
      if (hit) {
        const age = Date.now() - hit.bornAt;
        if (age < opts.maxAgeMs) {
          cacheRequests.inc({ cache: opts.name, result: 'hit' });
          // Stale-while-revalidate: refresh in the background; a failed refresh leaves the entry to expire.
          if (age >= freshMs && !inflight.has(key)) load(key, loader).catch(() => undefined);
          return hit.value;
        }
      }
      cacheRequests.inc({ cache: opts.name, result: 'miss' });
      if (!inflight.has(key)) await getOpts?.beforeLoad?.();
      return load(key, loader);
    },
    invalidate: (keys) => opts.bus.publish(opts.name, keys),
    close() {
      unsubscribe();
      entries.clear();
    },
  };
}
