import path from 'node:path';
import type { Logger } from 'pino';
import { buildApp, type ModuleRoutes } from './app.ts';
import { loadConfig, type Config } from './platform/config.ts';
import { openDatabase, type Database } from './platform/db/database.ts';
import { createFlags, type Flags } from './platform/flags/flags.ts';
import { denyAllAuthenticator, type Authenticator } from './platform/http/auth.ts';
import type { App } from './platform/http/server.ts';
import { createLifecycle, type Lifecycle } from './platform/lifecycle.ts';
import { checkMigrations, migrate } from './platform/migrate/migrator.ts';
import { createLogger } from './platform/observability/logger.ts';
import { createRedis, type Redis } from './platform/redis.ts';

/** Everything a module may be given: the platform kernel, opened once per process. */
export interface Platform {
  config: Config;
  logger: Logger;
  db: Database;
  redis?: Redis;
  flags: Flags;
  lifecycle: Lifecycle;
}

/** Config → logger → database (migrated) → Redis. Shared by every process role. */
export async function openPlatform(
  env: Record<string, string | undefined> = process.env,
  opts: { migrate?: boolean } = {},
): Promise<Platform> {
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
  if (opts.migrate ?? config.migrateOnStart) {
    await migrate(db.owner, { kind: db.kind }, { log: (msg) => logger.info(msg) });
  } else {
    await checkMigrations(db.owner);
  }
  let redis: Redis | undefined;
  if (config.redisUrl) {
    const client = createRedis(config.redisUrl);
    redis = client;
    lifecycle.onShutdown({ name: 'redis', close: async () => void (await client.quit().catch(() => client.disconnect())) });
  }
  const flags = await createFlags({ db });
  return { config, logger, db, redis, flags, lifecycle };
}

export interface Modules {
  routes: ModuleRoutes[];
  authenticator: Authenticator;
}

/** Wires the modules to the platform and to each other's facades, explicitly, in dependency order. */
export function createModules(_platform: Platform): Modules {
  return { routes: [], authenticator: denyAllAuthenticator };
}

/** Builds the HTTP app for a platform (used by `plinth start` and by tests through app.inject). */
export async function createApiApp(platform: Platform, modules: Modules = createModules(platform)): Promise<App> {
  const { config, logger, db, redis, flags, lifecycle } = platform;
  return buildApp({
    config,
    logger,
    db,
    redis,
    flags,
    lifecycle: lifecycle.state,
    modules: modules.routes,
    authenticator: modules.authenticator,
  });
}

/** The API role: modules, HTTP listener, closed first on shutdown. */
export async function startApi(platform: Platform): Promise<App> {
  const app = await createApiApp(platform);
  platform.lifecycle.onShutdown({ name: 'http', close: () => app.close() });
  await app.listen({ port: platform.config.port, host: platform.config.host });
  return app;
}
