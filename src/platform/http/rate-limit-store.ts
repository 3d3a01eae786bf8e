import { LRUCache } from 'lru-cache';
import type { Logger } from 'pino';
import type { Redis } from '../redis.ts';
import type { ResiliencePolicy } from '../resilience/policy.ts';

/** `quota` requests per `windowSec`, spread evenly (GCRA): a full quota may be used as one burst. */
export interface RateLimitPolicy {
  quota: number;
  windowSec: number;
}

export interface RateLimitDecision {
  allowed: boolean;
  /** Requests still allowed right now. */
  remaining: number;
  /** Seconds until the quota is whole again. */
  resetSec: number;
  /** Seconds until the next request would be allowed (0 when allowed). */
  retryAfterSec: number;
}

export interface RateLimitStore {
  readonly kind: 'redis' | 'memory';
  consume(key: string, policy: RateLimitPolicy): Promise<RateLimitDecision>;
  /** Would a request be allowed now? Counts nothing (checks a budget that only failures consume). */
  peek(key: string, policy: RateLimitPolicy): Promise<RateLimitDecision>;
}

/**
 * GCRA (generic cell rate algorithm): one number per key, the theoretical arrival time (TAT) of the next
 * request. Emission interval T = window / quota; a request is allowed while TAT - now <= window - T.
 * Atomic and O(1), and it never lets more than `quota` through in any window of `windowSec`.
 */
function gcra(tat: number, now: number, policy: RateLimitPolicy): { decision: RateLimitDecision; newTat: number } {
  const windowMs = policy.windowSec * 1000;
  const interval = windowMs / policy.quota;
  const base = Math.max(tat, now);
  const newTat = base + interval;
  const allowAt = newTat - windowMs;
  if (allowAt > now) {
    const retryAfterMs = allowAt - now;
    return {
      newTat: tat,
      decision: { allowed: false, remaining: 0, resetSec: Math.ceil((base - now) / 1000), retryAfterSec: Math.max(1, Math.ceil(retryAfterMs / 1000)) },
    };
  }
  return {
    newTat,
    decision: {
      allowed: true,
      remaining: Math.max(0, Math.floor((windowMs - (newTat - now)) / interval)),
      resetSec: Math.ceil((newTat - now) / 1000),
      retryAfterSec: 0,
    },
  };
}

/** For the embedded single-process default, and the fallback when Redis is unreachable. */
export function createMemoryRateLimitStore(opts: { maxKeys?: number; now?: () => number } = {}): RateLimitStore {
  const now = opts.now ?? Date.now;
  // Bounded: an attacker rotating IPs evicts old keys instead of growing the heap.
  const tats = new LRUCache<string, number>({ max: opts.maxKeys ?? 100_000 });
  return {
    kind: 'memory',
    async consume(key, policy) {
      const t = now();
      const { decision, newTat } = gcra(tats.get(key) ?? t, t, policy);
      if (decision.allowed) tats.set(key, newTat, { ttl: Math.ceil(newTat - t) + 1 });
      return decision;
    },
    async peek(key, policy) {
      const t = now();
      return gcra(tats.get(key) ?? t, t, policy).decision;
    },
  };
}

// The same GCRA as above, run atomically in Redis on Redis's own clock (so every process agrees).
const GCRA_LUA = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local quota = tonumber(ARGV[1])
local window = tonumber(ARGV[2]) * 1000
local interval = window / quota
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
local base = math.max(tat, now)
local newTat = base + interval
local allowAt = newTat - window
if allowAt > now then
  return {0, 0, math.ceil(base - now), math.ceil(allowAt - now)}
end
if ARGV[3] == '1' then
  redis.call('SET', KEYS[1], tostring(newTat), 'PX', math.ceil(newTat - now) + 1)
end
return {1, math.floor((window - (newTat - now)) / interval), math.ceil(newTat - now), 0}
`;

export function createRedisRateLimitStore(redis: Redis, prefix: string): RateLimitStore {
  redis.defineCommand('plinthGcra', { numberOfKeys: 1, lua: GCRA_LUA });
  const run = (redis as unknown as { plinthGcra(key: string, quota: number, windowSec: number, commit: string): Promise<number[]> }).plinthGcra.bind(redis);
  const decide = async (key: string, policy: RateLimitPolicy, commit: boolean): Promise<RateLimitDecision> => {
    const [allowed, remaining, resetMs, retryMs] = (await run(`${prefix}rl:${key}`, policy.quota, policy.windowSec, commit ? '1' : '0')).map(Number);
    return {
      allowed: allowed === 1,
      remaining: Math.max(0, remaining!),
      resetSec: Math.ceil(resetMs! / 1000),
      retryAfterSec: allowed === 1 ? 0 : Math.max(1, Math.ceil(retryMs! / 1000)),
    };
  };
  return {
    kind: 'redis',
    consume: (key, policy) => decide(key, policy, true),
    peek: (key, policy) => decide(key, policy, false),
  };
}

/**
 * Redis when it answers, a process-local limiter when it does not (breaker open, timeout): limits stay
 * enforced per instance instead of failing open or failing every request.
 */
/** The policy's timeout abandons a slow call: its late rejection must not become an unhandled one. */
function settled<T>(p: Promise<T>): Promise<T> {
  p.catch(() => undefined);
  return p;
}

export function createResilientRateLimitStore(opts: {
  redis: Redis;
  prefix: string;
  policy: ResiliencePolicy;
  logger?: Logger;
}): RateLimitStore & { lastSource(): 'redis' | 'memory' } {
  const primary = createRedisRateLimitStore(opts.redis, opts.prefix);
  const local = createMemoryRateLimitStore();
  let source: 'redis' | 'memory' = 'redis';
  return {
    kind: 'redis',
    lastSource: () => source,
    async consume(key, policy) {
      try {
        const decision = await opts.policy.execute(() => settled(primary.consume(key, policy)));
        if (source === 'memory') opts.logger?.info('rate limiter: Redis is back, using shared limits again');
        source = 'redis';
        return decision;
      } catch (err) {
        if (source === 'redis') opts.logger?.warn({ err }, 'rate limiter: Redis unavailable, using the local in-memory limiter');
        source = 'memory';
        return local.consume(key, policy);
      }
    },
    async peek(key, policy) {
      try {
        return await opts.policy.execute(() => settled(primary.peek(key, policy)));
      } catch {
        return local.peek(key, policy);
      }
    },
  };
}
