import { randomBytes } from 'node:crypto';
import type { Logger } from 'pino';
import type { Redis } from '../redis.ts';

/** What a process-local cache needs from the bus: invalidations of its topic, and whether it may trust them. */
export interface InvalidationListener {
  /** Drop these keys (an invalidation published by any process, this one included). */
  onKeys(keys: string[]): void;
  /** Messages may have been missed (the subscription dropped): drop everything. */
  onReset(): void;
}

/**
 * Cross-process invalidation of process-local caches. `publish` drops the keys in this process at once
 * (synchronously) and in every other process through Redis pub/sub. Embedded (no Redis): in-process only.
 */
export interface InvalidationBus {
  readonly kind: 'redis' | 'memory';
  subscribe(topic: string, listener: InvalidationListener): () => void;
  /**
   * Call after the change has committed. Resolves true once the message reached Redis. When Redis cannot
   * be reached it keeps retrying in the background for `retryForMs` (after which every entry cached before
   * the commit has expired anyway) and resolves false.
   */
  publish(topic: string, keys: string[]): Promise<boolean>;
  /**
   * True while this process is subscribed, i.e. invalidations from other processes reach it. Caches must
   * not serve or store entries while it is false (they read the record instead).
   */
  live(): boolean;
  /** Resolves once subscribed (tests, start-up); rejects after `timeoutMs`. */
  ready(timeoutMs?: number): Promise<void>;
  close(): Promise<void>;
}

interface Message {
  /** topic */
  t: string;
  /** keys */
  k: string[];
  /** the publishing bus: it delivered locally when publishing, so it skips its own echo */
  o: string;
}

function localFanOut() {
  const listeners = new Map<string, Set<InvalidationListener>>();
  return {
    subscribe(topic: string, listener: InvalidationListener): () => void {
      const set = listeners.get(topic) ?? new Set();
      listeners.set(topic, set);
      set.add(listener);
      return () => void set.delete(listener);
    },
    deliver(topic: string, keys: string[]): void {
      for (const l of listeners.get(topic) ?? []) l.onKeys(keys);
    },
    reset(): void {
      for (const set of listeners.values()) for (const l of set) l.onReset();
    },
  };
}

/** The embedded single-process bus (also shared by two app instances in one test process). */
export function createMemoryInvalidationBus(): InvalidationBus {
  const fan = localFanOut();
  return {
    kind: 'memory',
    subscribe: fan.subscribe,
    async publish(topic, keys) {
      fan.deliver(topic, keys);
      return true;
    },
    live: () => true,
    ready: async () => undefined,
    close: async () => undefined,
  };
}

export interface RedisBusOptions {
  /** The process's command connection (publishes go through it); the subscriber is a duplicate of it. */
  redis: Redis;
  /** config.redisPrefix: the channel is `<prefix>invalidate`. */
  prefix: string;
  logger?: Logger;
  /** How long a publish that could not reach Redis is retried (the L1 lifetime: after it, nothing stale is left). */
  retryForMs: number;
  /** Resubscribe backoff: first delay, doubled per failed attempt up to maxBackoffMs, with jitter. */
  minBackoffMs?: number;
  maxBackoffMs?: number;
  /** Connection name of the subscriber (CLIENT LIST / CLIENT KILL NAME in tests and operations). */
  connectionName?: string;
}

/**
 * Redis pub/sub bus. The subscriber is its own connection, managed here rather than by ioredis' reconnect:
 * a failed connect or SUBSCRIBE (at start or later) and a dropped connection are retried with exponential
 * backoff and jitter, for as long as the process runs. While it is not subscribed `live()` is false, so
 * caches bypass themselves; every (re)subscription resets the listeners, since messages published while
 * it was away are lost.
 */
export function createRedisInvalidationBus(opts: RedisBusOptions): InvalidationBus {
  const fan = localFanOut();
  const channel = `${opts.prefix}invalidate`;
  const self = randomBytes(8).toString('hex');
  const name = opts.connectionName ?? `plinth-inval-${self.slice(0, 8)}`;
  const minBackoff = opts.minBackoffMs ?? 100;
  const maxBackoff = opts.maxBackoffMs ?? 5_000;
  let subscribed = false;
  let closed = false;
  let current: Redis | undefined;
  let wake: (() => void) | undefined;
  const waiters: Array<() => void> = [];
  const retries = new Set<NodeJS.Timeout>();

  const sleep = (ms: number) =>
    new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, ms);
      timer.unref();
      wake = () => {
        clearTimeout(timer);
        resolve();
      };
    });

  function onMessage(_channel: string, raw: string): void {
    let msg: Message;
    try {
      msg = JSON.parse(raw) as Message;
    } catch {
      return;
    }
    // Our own message was delivered here when it was published; delivering it again would make loads
    // that started after it (and read the new state) look stale.
    if (msg?.o === self) return;
    if (typeof msg?.t === 'string' && Array.isArray(msg.k)) fan.deliver(msg.t, msg.k.filter((k) => typeof k === 'string'));
  }

  /** One subscription's life: connect, SUBSCRIBE, wait for the connection to end. Throws when it could not start. */
  async function subscribeOnce(): Promise<void> {
    const sub = opts.redis.duplicate({
      connectionName: name,
      lazyConnect: true,
      enableOfflineQueue: false,
      autoResubscribe: false,
      maxRetriesPerRequest: 0,
      // No ioredis reconnection: this loop owns it, so a failure at any point is retried the same way.
      retryStrategy: () => null,
    });
    current = sub;
    sub.on('error', () => {});
    sub.on('message', onMessage);
    const ended = new Promise<void>((resolve) => sub.once('end', () => resolve()));
    try {
      await sub.connect();
      await sub.subscribe(channel);
    } catch (err) {
      sub.disconnect();
      throw err;
    }
    subscribed = true;
    // Whatever was published while we were away is lost: start from the record again.
    fan.reset();
    for (const w of waiters.splice(0)) w();
    opts.logger?.info({ channel }, 'invalidation bus: subscribed');
    await ended;
    subscribed = false;
    fan.reset();
  }

  void (async () => {
    let attempt = 0;
    while (!closed) {
      const started = Date.now();
      let failure: string | undefined;
      try {
        await subscribeOnce();
      } catch (err) {
        failure = (err as Error).message;
      }
      subscribed = false;
      current = undefined;
      if (closed) break;
      // A subscription that lasted a while starts the backoff over.
      if (Date.now() - started > maxBackoff) attempt = 0;
      const delay = Math.min(maxBackoff, minBackoff * 2 ** attempt);
      // Once per outage, not once per attempt.
      if (attempt === 0) opts.logger?.warn({ err: failure, channel }, 'invalidation bus: not subscribed; process-local caches bypassed until resubscribed (retrying with backoff)');
      attempt += 1;
      await sleep(delay / 2 + Math.random() * (delay / 2));
    }
  })();

  // A connection still being opened for the first time (a CLI that just started) is worth a short wait;
  // one that was lost is not (publishes fail fast and are retried in the background).
  let everReady = opts.redis.status === 'ready';
  if (!everReady) opts.redis.once('ready', () => (everReady = true));
  async function connected(ms: number): Promise<void> {
    const r = opts.redis;
    if (everReady || !['wait', 'connecting', 'connect'].includes(r.status)) return;
    await new Promise<void>((resolve) => {
      const timer = setTimeout(done, ms);
      timer.unref();
      r.once('ready', done);
      function done() {
        clearTimeout(timer);
        r.off('ready', done);
        resolve();
      }
    });
  }

  async function send(payload: string): Promise<void> {
    await connected(1_000);
    const receivers = await opts.redis.publish(channel, payload);
    if (typeof receivers !== 'number') throw new Error('publish failed');
  }

  return {
    kind: 'redis',
    subscribe: fan.subscribe,
    async publish(topic, keys) {
      if (keys.length === 0) return true;
      fan.deliver(topic, keys);
      const payload = JSON.stringify({ t: topic, k: keys, o: self } satisfies Message);
      try {
        await send(payload);
        return true;
      } catch (err) {
        opts.logger?.warn({ err: (err as Error).message, topic, keys: keys.length }, 'invalidation bus: publish failed; retrying');
        const giveUpAt = Date.now() + opts.retryForMs;
        let delay = minBackoff;
        const schedule = () => {
          const timer = setTimeout(() => {
            retries.delete(timer);
            if (closed || Date.now() > giveUpAt) return;
            send(payload).catch(() => {
              delay = Math.min(maxBackoff, delay * 2);
              schedule();
            });
          }, delay);
          timer.unref();
          retries.add(timer);
        };
        schedule();
        return false;
      }
    },
    live: () => subscribed,
    ready(timeoutMs = 5_000) {
      if (subscribed) return Promise.resolve();
      return new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error('invalidation bus: not subscribed in time')), timeoutMs);
        timer.unref();
        waiters.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    },
    async close() {
      closed = true;
      for (const t of retries) clearTimeout(t);
      current?.disconnect();
      wake?.();
    },
  };
}
