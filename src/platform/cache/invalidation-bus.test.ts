import { randomBytes } from 'node:crypto';
import net from 'node:net';
import { afterAll, describe, expect, it } from 'vitest';
import { freePort } from '../../../test/helpers/own-services.ts';
import { createRedis, type Redis } from '../redis.ts';
import { createMemoryInvalidationBus, createRedisInvalidationBus, type InvalidationBus } from './invalidation-bus.ts';

const redisUrl = process.env.TEST_REDIS_URL;

/** A TCP proxy to the test Redis on `port` that can be stopped and started: "Redis" going away and back. */
function redisProxy(port: number) {
  const target = new URL(redisUrl!);
  const sockets = new Set<net.Socket>();
  let server: net.Server | undefined;
  return {
    async start() {
      server = net.createServer((client) => {
        const upstream = net.connect(Number(target.port || 6379), target.hostname);
        client.pipe(upstream).pipe(client);
        for (const s of [client, upstream]) {
          sockets.add(s);
          s.on('error', () => {});
          s.on('close', () => sockets.delete(s));
        }
      });
      await new Promise<void>((r) => server!.listen(port, '127.0.0.1', r));
    },
    async stop() {
      for (const s of sockets) s.destroy();
      await new Promise<void>((r) => (server ? server.close(() => r()) : r()));
      server = undefined;
    },
  };
}

function collect(bus: InvalidationBus, topic: string) {
  const got: string[] = [];
  let resets = 0;
  bus.subscribe(topic, { onKeys: (k) => got.push(...k), onReset: () => void resets++ });
  return { got, resets: () => resets };
}

async function until(cond: () => boolean, ms = 3_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!cond() && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
  expect(cond()).toBe(true);
}

describe('in-process invalidation bus', () => {
  it('delivers to every subscriber of the topic, synchronously', async () => {
    const bus = createMemoryInvalidationBus();
    const a = collect(bus, 'x');
    const other = collect(bus, 'y');
    expect(await bus.publish('x', ['1', '2'])).toBe(true);
    expect(a.got).toEqual(['1', '2']);
    expect(other.got).toEqual([]);
    expect(bus.live()).toBe(true);
  });
});

describe.skipIf(!redisUrl)('Redis invalidation bus', () => {
  const prefix = `plinth-test:${randomBytes(4).toString('hex')}:`;
  const closers: Array<() => Promise<void> | void> = [];
  afterAll(async () => {
    for (const c of closers.reverse()) await c();
  });
  const redis = (url = redisUrl!): Redis => {
    const r = createRedis(url);
    closers.push(() => r.disconnect());
    return r;
  };
  const bus = (r: Redis, extra: Partial<Parameters<typeof createRedisInvalidationBus>[0]> = {}) => {
    const b = createRedisInvalidationBus({ redis: r, prefix, retryForMs: 5_000, minBackoffMs: 20, maxBackoffMs: 200, ...extra });
    closers.push(() => b.close());
    return b;
  };

  it('carries invalidations between processes, and not to another prefix', async () => {
    const a = bus(redis());
    const b = bus(redis());
    const elsewhere = createRedisInvalidationBus({ redis: redis(), prefix: `${prefix}other:`, retryForMs: 1_000 });
    closers.push(() => elsewhere.close());
    await Promise.all([a.ready(), b.ready(), elsewhere.ready()]);
    const onB = collect(b, 'sessions');
    const onElsewhere = collect(elsewhere, 'sessions');
    expect(await a.publish('sessions', ['h1'])).toBe(true);
    await until(() => onB.got.includes('h1'));
    expect(onElsewhere.got).toEqual([]);
  });

  it('a subscriber that cannot reach Redis at start keeps retrying, and resets its caches once subscribed', async () => {
    const port = await freePort();
    const proxy = redisProxy(port);
    closers.push(() => proxy.stop());
    const b = bus(redis(`redis://127.0.0.1:${port}`));
    const onB = collect(b, 'sessions');
    await new Promise((r) => setTimeout(r, 150)); // several failed attempts
    expect(b.live()).toBe(false);
    await proxy.start();
    await b.ready(3_000);
    expect(onB.resets()).toBeGreaterThanOrEqual(1);
    const a = bus(redis());
    await a.ready();
    await a.publish('sessions', ['after-start']);
    await until(() => onB.got.includes('after-start'));

    // Redis goes away: deaf at once; back: subscribed again, caches reset, messages flow.
    const resetsBefore = onB.resets();
    await proxy.stop();
    await until(() => !b.live());
    expect(onB.resets()).toBeGreaterThan(resetsBefore);
    await proxy.start();
    await b.ready(3_000);
    await a.publish('sessions', ['after-restart']);
    await until(() => onB.got.includes('after-restart'));
  });

  it('a publish that cannot reach Redis is retried until it lands (within retryForMs)', async () => {
    const port = await freePort();
    const proxy = redisProxy(port);
    closers.push(() => proxy.stop());
    const b = bus(redis());
    await b.ready();
    const onB = collect(b, 'memberships');
    const a = bus(redis(`redis://127.0.0.1:${port}`)); // the publisher is cut off from Redis
    const local = collect(a, 'memberships');
    expect(await a.publish('memberships', ['org:user'])).toBe(false);
    expect(local.got).toEqual(['org:user']); // its own process dropped the key at once
    await proxy.start();
    await until(() => onB.got.includes('org:user'));
  });
});
