import path from 'node:path';
import type { Logger } from 'pino';
import { buildApp } from './app.ts';
import { loadConfig, type Config } from './platform/config.ts';
import { openDatabase, type Database } from './platform/db/database.ts';
import type { App } from './platform/http/server.ts';
import { createLifecycle, type Lifecycle } from './platform/lifecycle.ts';
import { migrate } from './platform/migrate/migrator.ts';
import { createLogger } from './platform/observability/logger.ts';
import { createRedis, type Redis } from './platform/redis.ts';

export interface Platform {
  config: Config;
  logger: Logger;
  db: Database;
  redis?: Redis;
  lifecycle: Lifecycle;
}

/** Config → logger → database (migrated) → Redis. Shared by every process role. */
export async function openPlatform(env: Record<string, string | undefined> = process.env): Promise<Platform> {
  const config = loadConfig(env);
  const logger = createLogger(config.logLevel);
  const lifecycle = createLifecycle({ logger, graceMs: config.shutdownGraceMs, delayMs: config.shutdownDelayMs });
  const db = await openDatabase({
    databaseUrl: config.databaseUrl,
    databaseAppUrl: config.databaseAppUrl,
    replicaUrls: config.databaseReplicaUrls,
    poolMax: config.databasePoolMax,
    dataDir: config.databaseUrl ? undefined : path.join(config.dataDir, 'pgdata'),
  });
  lifecycle.onShutdown({ name: 'database', close: () => db.close() });
  await migrate(db.owner, { kind: db.kind }, { log: (msg) => logger.info(msg) });
  let redis: Redis | undefined;
  if (config.redisUrl) {
    const client = createRedis(config.redisUrl);
    redis = client;
    lifecycle.onShutdown({ name: 'redis', close: async () => void (await client.quit().catch(() => client.disconnect())) });
  }
  return { config, logger, db, redis, lifecycle };
}

/** The API role: platform, modules, HTTP listener. */
export async function startApi(platform: Platform): Promise<App> {
  const { config, logger, db, redis, lifecycle } = platform;
  const app = await buildApp({ config, logger, db, redis, lifecycle: lifecycle.state, modules: [] });
  lifecycle.onShutdown({ name: 'http', close: () => app.close() });
  await app.listen({ port: config.port, host: config.host });
  return app;
}
