import type { Logger } from 'pino';
import type { Redis } from '../redis.ts';
import type { ResiliencePolicy } from '../resilience/policy.ts';
import { growingLru } from '../cache/lru.ts';

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
  /** Cells taken by a `consume` of `count` > 1 (at least 1 when allowed; fewer than asked when fewer were left). */
  granted?: number;
}

/**
 * One bucket of a batch: `consume` counts the request when that bucket allows it (each bucket on its
 * own, as separate consume calls would); `peek` counts nothing; `gate` counts nothing and, when it
 * refuses, stops the batch before anything is consumed (the auth-failure budget: a refused request
 * must not spend the caller's quotas).
 */
export interface RateLimitCheck {
  key: string;
  policy: RateLimitPolicy;
  mode: 'consume' | 'peek' | 'gate';
  /**
   * `consume` only: take up to this many cells at once (a lease for later requests, see rate-limit-lease.ts).
   * Allowed when one cell is left, as a single consume would be; then as many as are left, up to `count`.
   */
  count?: number;
}

export interface RateLimitStore {
  readonly kind: 'redis' | 'memory';
  consume(key: string, policy: RateLimitPolicy): Promise<RateLimitDecision>;
  /** Would a request be allowed now? Counts nothing (checks a budget that only failures consume). */
  peek(key: string, policy: RateLimitPolicy): Promise<RateLimitDecision>;
  /**
   * Every bucket of a request at once (with Redis: one round trip, one script). Decisions in the order of
   * `checks`; when a gate refuses, the buckets after the gates are not evaluated (`undefined`).
   */
  check(checks: RateLimitCheck[]): Promise<Array<RateLimitDecision | undefined>>;
}

/** Gates first (none consumed if one refuses), then the others in order. */
function gatesFirst(checks: RateLimitCheck[]): number[] {
  const order = checks.map((_, i) => i);
  return [...order.filter((i) => checks[i]!.mode === 'gate'), ...order.filter((i) => checks[i]!.mode !== 'gate')];
}

/**
 * GCRA (generic cell rate algorithm): one number per key, the theoretical arrival time (TAT) of the next
 * request. Emission interval T = window / quota; a request is allowed while TAT - now <= window - T.
 * Atomic and O(1), and it never lets more than `quota` through in any window of `windowSec`.
 */
function gcra(tat: number, now: number, policy: RateLimitPolicy, count = 1): { decision: RateLimitDecision; newTat: number } {
  const windowMs = policy.windowSec * 1000;
  const interval = windowMs / policy.quota;
  const base = Math.max(tat, now);
  const allowAt = base + interval - windowMs;
  if (allowAt > now) {
    const retryAfterMs = allowAt - now;
    return {
      newTat: tat,
      decision: { allowed: false, remaining: 0, resetSec: Math.ceil((base - now) / 1000), retryAfterSec: Math.max(1, Math.ceil(retryAfterMs / 1000)) },
    };
  }
  const granted = Math.min(count, Math.max(1, Math.floor((windowMs - (base - now)) / interval)));
  const newTat = base + granted * interval;
  return {
    newTat,
    decision: {
      allowed: true,
      remaining: Math.max(0, Math.floor((windowMs - (newTat - now)) / interval)),
      resetSec: Math.ceil((newTat - now) / 1000),
      retryAfterSec: 0,
      granted,
    },
  };
}

/** For the embedded single-process default, and the fallback when Redis is unreachable. */
export function createMemoryRateLimitStore(opts: { maxKeys?: number; now?: () => number } = {}): RateLimitStore {
  const now = opts.now ?? Date.now;
  // Bounded: an attacker rotating IPs evicts old keys instead of growing the heap.
  const tats = growingLru<string, number>({ entries: opts.maxKeys ?? 100_000 });
  function run(key: string, policy: RateLimitPolicy, commit: boolean, count = 1): RateLimitDecision {
    const t = now();
    const { decision, newTat } = gcra(tats.get(key) ?? t, t, policy, commit ? count : 1);
    if (commit && decision.allowed) tats.set(key, newTat, { ttl: Math.ceil(newTat - t) + 1 });
    return decision;
  }
  return {
    kind: 'memory',
    consume: async (key, policy) => run(key, policy, true),
    peek: async (key, policy) => run(key, policy, false),
    async check(checks) {
      const out: Array<RateLimitDecision | undefined> = checks.map(() => undefined);
      for (const i of gatesFirst(checks)) {
        const c = checks[i]!;
        const d = run(c.key, c.policy, c.mode === 'consume', c.count);
        out[i] = d;
        if (c.mode === 'gate' && !d.allowed) break;
      }
      return out;
    },
  };
}

// The same GCRA as above, run atomically in Redis on Redis's own clock (so every process agrees), over
// every bucket of a request in one script: KEYS[i] with ARGV quota, window, mode ('g' gate, 'c' consume,
// 'p' peek) and count (cells a consume may take) per key, gates listed first. Returns 5 numbers per
// evaluated key (allowed, remaining, reset ms, retry ms, granted); a refusing gate ends it.
const GCRA_BATCH_LUA = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local out = {}
for i = 1, #KEYS do
  local quota = tonumber(ARGV[i * 4 - 3])
  local window = tonumber(ARGV[i * 4 - 2]) * 1000
  local mode = ARGV[i * 4 - 1]
  local count = tonumber(ARGV[i * 4])
  local interval = window / quota
  local tat = tonumber(redis.call('GET', KEYS[i]) or now)
  local base = math.max(tat, now)
  local allowAt = base + interval - window
  if allowAt > now then
    table.insert(out, 0); table.insert(out, 0); table.insert(out, math.ceil(base - now)); table.insert(out, math.ceil(allowAt - now)); table.insert(out, 0)
    if mode == 'g' then return out end
  else
    local granted = 1
    if mode == 'c' then
      granted = math.min(count, math.max(1, math.floor((window - (base - now)) / interval)))
    end
    local newTat = base + granted * interval
    if mode == 'c' then
      redis.call('SET', KEYS[i], tostring(newTat), 'PX', math.ceil(newTat - now) + 1)
    end
    table.insert(out, 1); table.insert(out, math.floor((window - (newTat - now)) / interval)); table.insert(out, math.ceil(newTat - now)); table.insert(out, 0); table.insert(out, granted)
  end
end
return out
`;

const MODE = { gate: 'g', consume: 'c', peek: 'p' } as const;

export function createRedisRateLimitStore(redis: Redis, prefix: string): RateLimitStore {
  // defineCommand runs EVALSHA (the script is cached by Redis) and falls back to EVAL once after a NOSCRIPT.
  if (!('plinthGcraBatch' in redis)) redis.defineCommand('plinthGcraBatch', { lua: GCRA_BATCH_LUA });
  const run = (redis as unknown as { plinthGcraBatch(numKeys: number, ...args: Array<string | number>): Promise<number[]> }).plinthGcraBatch.bind(redis);
  async function check(checks: RateLimitCheck[]): Promise<Array<RateLimitDecision | undefined>> {
    const order = gatesFirst(checks);
    const keys = order.map((i) => `${prefix}rl:${checks[i]!.key}`);
    const args = order.flatMap((i) => {
      const c = checks[i]!;
      return [c.policy.quota, c.policy.windowSec, MODE[c.mode], Math.max(1, Math.floor(c.count ?? 1))];
    });
    const flat = (await run(keys.length, ...keys, ...args)).map(Number);
    const out: Array<RateLimitDecision | undefined> = checks.map(() => undefined);
    for (let n = 0; n * 5 < flat.length; n++) {
      const [allowed, remaining, resetMs, retryMs, granted] = flat.slice(n * 5, n * 5 + 5);
      out[order[n]!] = {
        allowed: allowed === 1,
        remaining: Math.max(0, remaining!),
        resetSec: Math.ceil(resetMs! / 1000),
        retryAfterSec: allowed === 1 ? 0 : Math.max(1, Math.ceil(retryMs! / 1000)),
        granted: granted!,
      };
    }
    return out;
  }
  const one = async (key: string, policy: RateLimitPolicy, mode: RateLimitCheck['mode']) => (await check([{ key, policy, mode }]))[0]!;
  return {
    kind: 'redis',
    consume: (key, policy) => one(key, policy, 'consume'),
    peek: (key, policy) => one(key, policy, 'peek'),
    check,
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
  /** Redis when it answers; the local limiter when it does not (and a log line when that changes). */
  async function shared<R>(fn: (store: RateLimitStore) => Promise<R>): Promise<R> {
    try {
      const result = await opts.policy.execute(() => settled(fn(primary)));
      if (source === 'memory') opts.logger?.info('rate limiter: Redis is back, using shared limits again');
      source = 'redis';
      return result;
    } catch (err) {
      if (source === 'redis') opts.logger?.warn({ err }, 'rate limiter: Redis unavailable, using the local in-memory limiter');
      source = 'memory';
      return fn(local);
    }
  }
  return {
    kind: 'redis',
    lastSource: () => source,
    consume: (key, policy) => shared((s) => s.consume(key, policy)),
    async peek(key, policy) {
      try {
        return await opts.policy.execute(() => settled(primary.peek(key, policy)));
      } catch {
        return local.peek(key, policy);
      }
    },
    check: (checks) => shared((s) => s.check(checks)),
  };
}
