import { Redis } from 'ioredis';

export type { Redis };

/**
 * A Redis connection for cache, rate limits and sessions. It never queues commands while disconnected
 * (enableOfflineQueue: false): callers get an error at once and fall back, instead of hanging.
 */
export function createRedis(url: string, opts: { name?: string } = {}): Redis {
  const redis = new Redis(url, {
    connectionName: opts.name ?? 'plinth',
    enableOfflineQueue: false,
    maxRetriesPerRequest: 1,
    connectTimeout: 2_000,
    commandTimeout: 1_000,
    retryStrategy: (attempt) => Math.min(attempt * 200, 2_000),
  });
  // Connection errors surface through failed commands; an unhandled 'error' event would crash the process.
  redis.on('error', () => {});
  return redis;
}

export async function pingRedis(redis: Redis): Promise<void> {
  const answer = await redis.ping();
  if (answer !== 'PONG') throw new Error(`unexpected PING answer ${answer}`);
}
