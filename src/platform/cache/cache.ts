import type { Logger } from 'pino';
import type { Redis } from '../redis.ts';
import type { ResiliencePolicy } from '../resilience/policy.ts';
import { cacheRequests } from '../observability/metrics.ts';
import { createRedisInvalidationBus, type InvalidationBus } from './invalidation-bus.ts';
import { growingLru } from './lru.ts';

export interface CacheOptions {
  /** Redis (L2), shared by every process; absent in the embedded default (L1 only). */
  redis?: Redis;
  /** Wraps every Redis call: on error or an open breaker the cache answers "miss" at once. */
  policy: ResiliencePolicy;
  /** config.redisPrefix */
  prefix: string;
  /** Lifetime of L1 entries: the bound on staleness in other processes if an invalidation message is lost. */
  l1TtlMs: number;
  l1Max?: number;
  logger?: Logger;
  /**
   * Cross-process L1 invalidation (platform.invalidations). Without one, a cache with Redis opens its own
   * bus over it (and closes it with the cache); without Redis there is no other process to tell.
   */
  bus?: InvalidationBus;
}

/** The bus topic of cache-aside invalidations; keys are full keys (`tenant:<id>:<name>:<key>`). */
const TOPIC = 'cache';

export interface NamespaceOptions<T = unknown> {
  /** Lifetime in Redis (and the upper bound in L1). */
  ttlSec: number;
  /**
   * The value's version (a row's optimistic-concurrency counter). With it, Redis never holds an older
   * version than the newest one stored or invalidated: a read that raced an update cannot write the old
   * row back after the invalidation (it stays a miss until the new version is loaded).
   */
  version?: (value: T) => number;
}

/** Invalidation version for a deleted value: no version of it may be cached again (until the TTL). */
export const DELETED = Number.MAX_SAFE_INTEGER;

/** A named, tenant-scoped cache: keys are `tenant:<tenantId>:<name>:<key>`, so no tenant can read another's. */
export interface TenantCache<T> {
  /** Cache-aside: the cached value, or loader()'s (stored, then returned). One loader per key per process at a time. */
  get(tenantId: string, key: string, loader: () => Promise<T>): Promise<T>;
  /**
   * This process's L1 entry, synchronously, or undefined (never asks Redis or a loader): for checks on every
   * request that then skip `get`'s promises in the common case. Same validity as `get`'s L1 hits.
   */
  peek(tenantId: string, key: string): T | undefined;
  /**
   * Drops the entry everywhere: Redis, this process's L1, and (via pub/sub) other processes' L1. Call after
   * commit. In a versioned namespace, pass the new version (or DELETED): Redis then keeps a marker that
   * refuses any older version. Resolves false when Redis could not be reached (the caller may retry,
   * e.g. from an outbox handler); true when it landed or there is no Redis.
   */
  invalidate(tenantId: string, key: string, version?: number): Promise<boolean>;
}

export interface CacheProvider {
  namespace<T>(name: string, opts: NamespaceOptions<T>): TenantCache<T>;
  close(): Promise<void>;
}

const NAME = /^[a-z0-9][a-z0-9_-]{0,63}$/;

/**
 * Versioned entries are `{"v":version,"d":value}`, markers left by an invalidation `{"v":version,"t":1}`.
 * A marker of version n refuses every value older than n; a value is stored unless an equal or newer
 * value, or a newer marker, is already there. One compare-and-set in Redis (ARGV[4]: 'value' or 'mark').
 */
const SET_IF_NEWER = `
local cur = redis.call('GET', KEYS[1])
if cur then
  local ok, obj = pcall(cjson.decode, cur)
  if ok and type(obj) == 'table' and tonumber(obj.v) then
    local have, new = tonumber(obj.v), tonumber(ARGV[1])
    if have > new or (have == new and (ARGV[4] == 'mark' or not obj.t)) then return 0 end
  end
end
redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3])
return 1`;

interface Versioned {
  v: number;
  d?: unknown;
  t?: 1;
}

/**
 * Cache-aside with two layers: L1 (lru-cache, per process, short TTL) and Redis (shared, namespace TTL).
 * Cross-process L1 invalidation: a message per invalidated key on the invalidation bus (Redis pub/sub,
 * resubscribed with backoff; L1 bypassed while it is not subscribed); the short L1 TTL bounds staleness
 * when a message is lost (the publisher cut off from Redis). Redis failures never fail a
 * read: the breaker turns them into misses, so the loader (the database) answers.
 */
export function createCache(opts: CacheOptions): CacheProvider {
  const counter = cacheRequests;
  const l1 = growingLru<string, { value: unknown }>({ entries: opts.l1Max ?? 10_000, ttl: Math.max(1, opts.l1TtlMs) });
  const inflight = new Map<string, Promise<unknown>>();
  // Bumped by invalidate(): a load that started before an invalidation must not store what it read.
  const generation = growingLru<string, number>({ entries: 100_000 });
  const redis = opts.redis;
  const ownBus = !opts.bus && redis && opts.l1TtlMs > 0 ? createRedisInvalidationBus({ redis, prefix: opts.prefix, logger: opts.logger, retryForMs: opts.l1TtlMs }) : undefined;
  const bus = opts.bus ?? ownBus;
  // While the bus is not subscribed, other processes' invalidations do not reach this L1: bypass it.
  const l1Usable = () => !bus || bus.live();
  // Bumped when the bus resets (messages may have been missed): every load in flight then is suspect.
  let epoch = 0;
  const bump = (k: string) => {
    generation.set(k, (generation.get(k) ?? 0) + 1);
    inflight.delete(k);
    l1.delete(k);
  };
  // Another process's invalidation counts like a local one: a load in flight here must not store.
  const unsubscribe = bus?.subscribe(TOPIC, {
    onKeys: (keys) => keys.forEach(bump),
    onReset: () => {
      epoch += 1;
      inflight.clear();
      l1.clear();
    },
  });

  async function redisCall<R>(fn: (r: Redis) => Promise<R>): Promise<R | undefined> {
    if (!redis) return undefined;
    try {
      return await opts.policy.execute(() => fn(redis));
    } catch {
      return undefined;
    }
  }
  const setIfNewer = (key: string, version: number, json: string, ttlSec: number, kind: 'value' | 'mark') =>
    redisCall((r) => r.eval(SET_IF_NEWER, 1, key, String(version), json, String(ttlSec), kind));

  return {
    namespace<T>(name: string, nsOpts: NamespaceOptions<T>): TenantCache<T> {
      if (!NAME.test(name)) throw new Error(`cache name ${name} must match ${NAME}`);
      const l1Ttl = Math.min(opts.l1TtlMs, nsOpts.ttlSec * 1000);
      const fullKey = (tenantId: string, key: string) => `tenant:${tenantId}:${name}:${key}`;
      const versionOf = nsOpts.version;

      async function load(k: string, loader: () => Promise<T>): Promise<T> {
        const gen = generation.get(k) ?? 0;
        const startEpoch = epoch;
        const current = () => (generation.get(k) ?? 0) === gen && epoch === startEpoch;
        const cached = await redisCall((r) => r.get(opts.prefix + k));
        if (typeof cached === 'string') {
          const stored: Versioned = versionOf ? (JSON.parse(cached) as Versioned) : { v: 0, d: JSON.parse(cached) };
          if (!stored.t) {
            counter.inc({ cache: name, result: 'hit' });
            const value = stored.d as T;
            if (l1Ttl > 0 && current() && l1Usable()) l1.set(k, { value }, { ttl: l1Ttl });
            return value;
          }
        }
        counter.inc({ cache: name, result: 'miss' });
        const value = await loader();
        if (!current()) return value;
        if (versionOf) {
          const v = versionOf(value);
          // Refused when Redis already has this version or a newer one (or a newer invalidation marker).
          const stored = await setIfNewer(opts.prefix + k, v, JSON.stringify({ v, d: value } satisfies Versioned), nsOpts.ttlSec, 'value');
          if (l1Ttl > 0 && stored !== 0 && current() && l1Usable()) l1.set(k, { value }, { ttl: l1Ttl });
          return value;
        }
        if (l1Ttl > 0 && l1Usable()) l1.set(k, { value }, { ttl: l1Ttl });
        await redisCall((r) => r.set(opts.prefix + k, JSON.stringify(value), 'EX', nsOpts.ttlSec));
        return value;
      }

      const l1Hit = (k: string): { value: unknown } | undefined => {
        const hit = l1Usable() ? l1.get(k) : undefined;
        if (hit) counter.inc({ cache: name, result: 'hit' });
        return hit;
      };

      return {
        peek: (tenantId, key) => l1Hit(fullKey(tenantId, key))?.value as T | undefined,
        async get(tenantId, key, loader) {
          const k = fullKey(tenantId, key);
          const hit = l1Hit(k);
          if (hit) return hit.value as T;
          // Single flight: concurrent misses for one key share one Redis read and one loader call.
          const pending = inflight.get(k);
          if (pending) return pending as Promise<T>;
          const p = load(k, loader).finally(() => inflight.delete(k));
          inflight.set(k, p);
          return p;
        },
        async invalidate(tenantId, key, version) {
          const k = fullKey(tenantId, key);
          bump(k);
          if (!redis) {
            if (bus) await bus.publish(TOPIC, [k]);
            return true;
          }
          const landed =
            versionOf && version !== undefined
              ? await setIfNewer(opts.prefix + k, version, JSON.stringify({ v: version, t: 1 } satisfies Versioned), nsOpts.ttlSec, 'mark')
              : await redisCall((r) => r.del(opts.prefix + k));
          // This process's L1 was dropped above; the bus tells the others (and retries while Redis is away).
          if (bus) await bus.publish(TOPIC, [k]);
          return landed !== undefined;
        },
      };
    },
    async close() {
      unsubscribe?.();
      await ownBus?.close();
      l1.clear();
    },
  };
}
