import { currentRequestContext, runWithContextField } from '../request-context.ts';

/**
 * Who is reading, for read-your-writes: the request's principal (resolved lazily: authentication runs after
 * the slot is opened), whether the request may write (POST, PUT, PATCH, DELETE: its transactions record the
 * primary's WAL position for the principal) and whether it already did (then its own reads go to the
 * primary). Transactions of GET requests record nothing, so reads never pay for the bookkeeping.
 */
export interface ReadSession {
  principal(): string | undefined;
  mutating: boolean;
  wrote: boolean;
}

/** A new read session (the request context's `readSession`). */
export function newReadSession(principal: () => string | undefined, mutating: boolean): ReadSession {
  return { principal, mutating, wrote: false };
}

/** Opens a read session for the code run by fn (one request). */
export function runWithReadSession<T>(principal: () => string | undefined, mutating: boolean, fn: () => T): T {
  return runWithContextField('readSession', newReadSession(principal, mutating), fn);
}

export function currentReadSession(): ReadSession | undefined {
  return currentRequestContext()?.readSession as ReadSession | undefined;
}

/**
 * The principal of a write requested now, for a statement that runs later on behalf of several requests
 * (`withStatement`'s writers): undefined outside requests and for GET requests. Marks the request as having
 * written (its own later reads go to the primary).
 */
export function currentWriter(): string | undefined {
  const session = currentReadSession();
  if (!session?.mutating) return undefined;
  session.wrote = true;
  return session.principal();
}

/**
 * Where each principal's last write ended in the primary's WAL (an LSN as a decimal byte position), kept
 * for a bounded time (longer than any replica may lag before it leaves rotation).
 */
export interface LsnStore {
  get(principal: string): Promise<bigint | undefined>;
  /** Keeps the larger of the stored and the given position. */
  advance(principal: string, lsn: bigint): Promise<void>;
}

/** In process: enough for one API process (the embedded default, tests); Redis shares it across instances. */
export function createMemoryLsnStore(ttlMs = 60_000, maxEntries = 100_000): LsnStore {
  const map = new Map<string, { lsn: bigint; until: number }>();
  return {
    async get(principal) {
      const e = map.get(principal);
      if (!e) return undefined;
      if (e.until < Date.now()) {
        map.delete(principal);
        return undefined;
      }
      return e.lsn;
    },
    async advance(principal, lsn) {
      const e = map.get(principal);
      const keep = e && e.until >= Date.now() && e.lsn > lsn ? e.lsn : lsn;
      map.delete(principal);
      map.set(principal, { lsn: keep, until: Date.now() + ttlMs });
      // Oldest first (insertion order): drop beyond the cap.
      if (map.size > maxEntries) map.delete(map.keys().next().value!);
    },
  };
}

interface RedisLike {
  get(key: string): Promise<string | null>;
  eval(script: string, numKeys: number, ...args: Array<string | number>): Promise<unknown>;
}

const ADVANCE = `
local cur = redis.call('GET', KEYS[1])
if (not cur) or (tonumber(ARGV[1]) > tonumber(cur)) then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
else
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 1`;

/**
 * Shared by every API instance (the next request may land elsewhere). Redis down: the error propagates to
 * the router, which then reads from the primary (never a possibly stale replica).
 */
export function createRedisLsnStore(redis: RedisLike, prefix: string, ttlMs = 60_000): LsnStore {
  const key = (p: string) => `${prefix}rw:lsn:${p}`;
  return {
    async get(principal) {
      const v = await redis.get(key(principal));
      return v === null ? undefined : BigInt(v);
    },
    async advance(principal, lsn) {
      await redis.eval(ADVANCE, 1, key(principal), lsn.toString(), ttlMs);
    },
  };
}

/** '16/B374D848' → byte position. */
export function parseLsn(text: string): bigint {
  const m = /^([0-9A-Fa-f]{1,8})\/([0-9A-Fa-f]{1,8})$/.exec(text);
  if (!m) throw new Error(`not an LSN: ${text}`);
  return (BigInt(`0x${m[1]}`) << 32n) + BigInt(`0x${m[2]}`);
}
