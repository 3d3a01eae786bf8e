import { randomBytes } from 'node:crypto';
import { Redis } from 'ioredis';
import pg from 'pg';

/**
 * The stores one bench run uses: a throwaway database on the local Postgres (created here, dropped at
 * the end) and a unique key prefix on the local Redis (its keys deleted at the end). Nothing else on
 * the shared servers is touched.
 */
export interface BenchEnv {
  databaseUrl: string;
  databaseName: string;
  redisUrl: string;
  redisPrefix: string;
  cleanup(): Promise<void>;
}

export const DEFAULT_PG = process.env.BENCH_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';
export const DEFAULT_REDIS = process.env.BENCH_REDIS_URL ?? 'redis://127.0.0.1:6379';

async function withClient<T>(url: string, fn: (c: pg.Client) => Promise<T>): Promise<T> {
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  try {
    return await fn(c);
  } finally {
    await c.end();
  }
}

export async function createBenchEnv(opts: { baseDatabaseUrl?: string; redisUrl?: string; baselineRows?: number } = {}): Promise<BenchEnv> {
  const base = opts.baseDatabaseUrl ?? DEFAULT_PG;
  const tag = `${Date.now().toString(36)}_${randomBytes(3).toString('hex')}`;
  const databaseName = `plinth_bench_${tag}`;
  await withClient(base, async (c) => {
    await c.query(`create database ${databaseName}`);
    // Profiling aid: e.g. BENCH_DB_SETTINGS="log_statement=all" logs this run's statements (and only its own).
    for (const kv of (process.env.BENCH_DB_SETTINGS ?? '').split(',').filter(Boolean)) {
      const [key, value] = kv.split('=');
      if (!/^[a-z_.]+$/.test(key ?? '')) throw new Error(`BENCH_DB_SETTINGS: bad setting name "${key}"`);
      await c.query(`alter database ${databaseName} set ${key} = ${c.escapeLiteral(value ?? '')}`);
    }
  });
  const url = new URL(base);
  url.pathname = `/${databaseName}`;
  const databaseUrl = url.toString();
  const rows = opts.baselineRows ?? 10_000;
  // Tables for the naive baselines, shaped like a small task row.
  await withClient(databaseUrl, async (c) => {
    await c.query(`create table bench_items (id bigint primary key, title text not null, status text not null,
      created_at timestamptz not null default now())`);
    await c.query(`insert into bench_items (id, title, status) select g, 'item ' || g, 'todo' from generate_series(1, $1) g`, [rows]);
    await c.query(`create table bench_inserts (id uuid primary key, title text not null, status text not null,
      created_at timestamptz not null default now())`);
    await c.query('analyze bench_items');
  });
  const redisUrl = opts.redisUrl ?? DEFAULT_REDIS;
  const redisPrefix = `plinth-bench:${tag}:`;
  return {
    databaseUrl,
    databaseName,
    redisUrl,
    redisPrefix,
    async cleanup() {
      await withClient(base, (c) => c.query(`drop database if exists ${databaseName} with (force)`)).catch((err) =>
        console.error(`could not drop ${databaseName}: ${(err as Error).message}`),
      );
      await deleteRedisPrefix(redisUrl, redisPrefix).catch(() => undefined);
    },
  };
}

/** Deletes only keys under this run's prefix (SCAN, never FLUSH: the Redis is shared). */
export async function deleteRedisPrefix(redisUrl: string, prefix: string): Promise<number> {
  const redis = new Redis(redisUrl, { lazyConnect: true, maxRetriesPerRequest: 1 });
  redis.on('error', () => {});
  await redis.connect();
  let cursor = '0';
  let deleted = 0;
  try {
    do {
      const [next, keys] = await redis.scan(cursor, 'MATCH', `${prefix}*`, 'COUNT', 1000);
      cursor = next;
      if (keys.length > 0) deleted += await redis.del(...keys);
    } while (cursor !== '0');
  } finally {
    redis.disconnect();
  }
  return deleted;
}
