import { randomBytes } from 'node:crypto';
import { pino, type Logger } from 'pino';
import { createApiApp, createEdgePlatform, createModules, type Modules, type Platform } from '../../src/main.ts';
import { loadConfig } from '../../src/platform/config.ts';
import type { DatabaseOptions } from '../../src/platform/db/database.ts';
import { createFlags } from '../../src/platform/flags/flags.ts';
import type { Authenticator } from '../../src/platform/http/auth.ts';
import type { App } from '../../src/platform/http/server.ts';
import { createEventBus, type EventBusDeps } from '../../src/platform/outbox/event-bus.ts';
import { createLifecycle } from '../../src/platform/lifecycle.ts';
import { createRedis } from '../../src/platform/redis.ts';
import { createTestDatabase, type TestDatabase } from '../../src/platform/testing/test-db.ts';

export interface TestPlatform extends Platform {
  testDb: TestDatabase;
  modules: Modules;
  app: App;
  close(): Promise<void>;
}

/**
 * The real composition (same createModules as `plinth start`) over a throwaway database, and over
 * real Redis with a unique key prefix when TEST_REDIS_URL is set.
 */
export async function createTestPlatform(
  opts: {
    env?: Record<string, string>;
    db?: Partial<DatabaseOptions>;
    logger?: Logger;
    /** Replaces the identity module's authenticator, for kernel tests that need a fixed principal. */
    authenticator?: Authenticator;
    /** Test-only: event bus tuning (schedule tick, sweep cadence). */
    events?: Partial<Pick<EventBusDeps, 'scheduleTickMs' | 'sweepEveryMs'>>;
    /** Test-only: compose the modules differently (e.g. with test doubles of other modules). Default: createModules. */
    compose?: (platform: Platform) => Modules;
  } = {},
): Promise<TestPlatform> {
  const redisUrl = process.env.TEST_REDIS_URL;
  const config = loadConfig({
    NODE_ENV: 'test',
    LOG_LEVEL: 'silent',
    REDIS_PREFIX: `plinth-test:${randomBytes(4).toString('hex')}:`,
    ...(redisUrl ? { REDIS_URL: redisUrl } : {}),
    ...opts.env,
  });
  const logger = opts.logger ?? pino({ level: config.logLevel });
  const lifecycle = createLifecycle({ logger, graceMs: config.shutdownGraceMs, delayMs: 0 });
  const testDb = await createTestDatabase(opts.db);
  const redis = config.redisUrl ? createRedis(config.redisUrl, { name: 'plinth-test' }) : undefined;
  const flags = await createFlags({ db: testDb.db });
  const events = createEventBus({ config, logger, db: testDb.db, ...opts.events });
  const platform: Platform = { config, logger, db: testDb.db, redis, flags, lifecycle, events, ...createEdgePlatform(config, logger, redis) };
  const created = (opts.compose ?? createModules)(platform);
  const modules = opts.authenticator ? { ...created, authenticator: opts.authenticator } : created;
  const app = await createApiApp(platform, modules);
  return {
    ...platform,
    testDb,
    modules,
    app,
    async close() {
      await app.close();
      await events.close();
      await platform.cache.close();
      if (redis) {
        const keys = await redis.keys(`${config.redisPrefix}*`).catch(() => [] as string[]);
        if (keys.length > 0) await redis.del(...keys).catch(() => 0);
        redis.disconnect();
      }
      await testDb.drop();
    },
  };
}
