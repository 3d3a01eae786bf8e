import { randomBytes } from 'node:crypto';
import { pino, type Logger } from 'pino';
import { compose, createApiApp, type ModuleSeams, type Modules, type Platform, type PlatformOptions } from '../../src/main.ts';
import type { DatabaseOptions } from '../../src/platform/db/database.ts';
import type { Authenticator } from '../../src/platform/http/auth.ts';
import type { App } from '../../src/platform/http/server.ts';
import { createTestDatabase, type TestDatabase } from '../../src/platform/testing/test-db.ts';

export interface TestPlatform extends Platform {
  testDb: TestDatabase;
  modules: Modules;
  app: App;
  close(): Promise<void>;
}

/**
 * The real composition (the same `compose` as `plinth start`) over a throwaway database, and over real
 * Redis with a unique key prefix when TEST_REDIS_URL is set. Every module's jobs are registered, as the
 * worker role does, so tests can relay and process events.
 */
export async function createTestPlatform(
  opts: {
    env?: Record<string, string>;
    db?: Partial<DatabaseOptions>;
    logger?: Logger;
    /** Replaces tenancy's authenticator, for kernel tests that need a fixed principal. */
    authenticator?: Authenticator;
    /** Test-only: event bus tuning (schedule tick, sweep cadence). */
    events?: PlatformOptions['events'];
    /** Test doubles for the seams (mailer, entitlements). */
    seams?: ModuleSeams;
    /** Test-only: compose the modules differently (e.g. with test doubles of other modules). Default: those compose() built. */
    compose?: (platform: Platform) => Modules;
  } = {},
): Promise<TestPlatform> {
  const redisUrl = process.env.TEST_REDIS_URL;
  const env = {
    NODE_ENV: 'test',
    LOG_LEVEL: 'silent',
    SHUTDOWN_DELAY_MS: '0',
    REDIS_PREFIX: `plinth-test:${randomBytes(4).toString('hex')}:`,
    ...(redisUrl ? { REDIS_URL: redisUrl } : {}),
    ...opts.env,
  };
  const testDb = await createTestDatabase(opts.db);
  const logger = opts.logger ?? pino({ level: env.LOG_LEVEL });
  const { platform, modules: composed } = await compose({ env, db: testDb.db, logger, events: opts.events, seams: opts.seams });
  const created = opts.compose ? opts.compose(platform) : composed;
  created.registerJobs(platform.events);
  const modules = opts.authenticator ? { ...created, authenticator: opts.authenticator } : created;
  const app = await createApiApp(platform, modules);
  return {
    ...platform,
    testDb,
    modules,
    app,
    async close() {
      // Not lifecycle.shutdown(): that also stops the process-wide tracer, which other tests in the file may use.
      await app.close();
      await platform.events.close();
      await platform.cache.close();
      await platform.invalidations.close();
      const { redis, config } = platform;
      if (redis) {
        const keys = await redis.keys(`${config.redisPrefix}*`).catch(() => [] as string[]);
        if (keys.length > 0) await redis.del(...keys).catch(() => 0);
        redis.disconnect();
      }
      await testDb.drop();
    },
  };
}

