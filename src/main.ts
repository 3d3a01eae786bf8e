import path from 'node:path';
import type { Logger } from 'pino';
import { buildApp, type ModuleRoutes } from './app.ts';
import { loadConfig, type Config } from './platform/config.ts';
import { checkAppLogin, openDatabase, type Database } from './platform/db/database.ts';
import { createFlags, type Flags } from './platform/flags/flags.ts';
import type { Authenticator } from './platform/http/auth.ts';
import type { RateLimitResolver } from './platform/http/rate-limit.ts';
import type { App } from './platform/http/server.ts';
import { createEventBus, type EventBus } from './platform/jobs/event-bus.ts';
import { createLifecycle, type Lifecycle } from './platform/lifecycle.ts';
import { checkMigrations, migrate } from './platform/migrate/migrator.ts';
import { createLogger } from './platform/observability/logger.ts';
import { registerEventMetrics } from './platform/observability/event-metrics.ts';
import { createQueryObserver } from './platform/observability/query-observer.ts';
import { shutdownTracing } from './platform/observability/tracing.ts';
import { createRedis, type Redis } from './platform/redis.ts';
import { createCache, type CacheProvider } from './platform/cache/cache.ts';
import { createOutboundPolicies, type OutboundPolicies } from './platform/resilience/policy.ts';
import { createAudit } from './modules/audit/index.ts';
import { createIdentity } from './modules/identity/index.ts';
import { createNotifications, type Mailer } from './modules/notifications/index.ts';
import { createProjects, isMemberVia, type Entitlements } from './modules/projects/index.ts';
import { createTenancy } from './modules/tenancy/index.ts';

/** Everything a module may be given: the platform kernel, opened once per process. */
export interface Platform {
  config: Config;
  logger: Logger;
  db: Database;
  redis?: Redis;
  flags: Flags;
  lifecycle: Lifecycle;
  /** Transactional outbox + jobs: modules add events in their transactions and subscribe handlers (<module>.jobs.ts). */
  events: EventBus;
  /** Resilience policies for outbound calls (redis, smtp, payment, webhook): one breaker per dependency. */
  policies: OutboundPolicies;
  /** Tenant-scoped cache-aside (L1 + Redis); see src/platform/cache/README.md. */
  cache: CacheProvider;
}

/** The edge pieces every process shares: outbound policies and the cache over them. */
export function createEdgePlatform(config: Config, logger: Logger, redis: Redis | undefined): Pick<Platform, 'policies' | 'cache'> {
  const policies = createOutboundPolicies(logger);
  const cache = createCache({ redis, policy: policies.redis, prefix: config.redisPrefix, l1TtlMs: config.edge.cacheL1TtlMs, logger });
  return { policies, cache };
}

/** Config → logger → database (migrated) → Redis. Shared by every process role. */
export async function openPlatform(
  env: Record<string, string | undefined> = process.env,
  opts: { migrate?: boolean } = {},
): Promise<Platform> {
  const config = loadConfig(env);
  const logger = createLogger(config.logLevel);
  const lifecycle = createLifecycle({ logger, graceMs: config.shutdownGraceMs, delayMs: config.shutdownDelayMs });
  // Registered first so it closes last: spans from the rest of the shutdown are still exported.
  lifecycle.onShutdown({ name: 'tracing', close: shutdownTracing });
  const db = await openDatabase({
    databaseUrl: config.databaseUrl,
    databaseAppUrl: config.databaseAppUrl,
    replicaUrls: config.databaseReplicaUrls,
    poolMax: config.databasePoolMax,
    dataDir: config.databaseUrl ? undefined : path.join(config.dataDir, 'pgdata'),
    onQuery: createQueryObserver({ logger, slowQueryMs: config.slowQueryMs }),
  });
  lifecycle.onShutdown({ name: 'database', close: () => db.close() });
  const { newer } = (opts.migrate ?? config.migrateOnStart)
    ? await migrate(db.owner, { kind: db.kind }, { log: (msg) => logger.info(msg) })
    : await checkMigrations(db.owner);
  if (newer.length > 0) logger.warn({ newer }, 'running beside expand migrations of a newer release (rollback)');
  // Refuse to start (one line) on a wrong app-role login rather than run and fail every request.
  if (!opts.migrate) await checkAppLogin(db);
  let redis: Redis | undefined;
  if (config.redisUrl) {
    const client = createRedis(config.redisUrl);
    redis = client;
    lifecycle.onShutdown({ name: 'redis', close: async () => void (await client.quit().catch(() => client.disconnect())) });
  }
  const flags = await createFlags({ db });
  const edge = createEdgePlatform(config, logger, redis);
  lifecycle.onShutdown({ name: 'cache', close: () => edge.cache.close() });
  const events = createEventBus({ config, logger, db });
  lifecycle.onShutdown({ name: 'jobs', close: () => events.close() });
  // Outbox backlog/age and job counts by state, read from Postgres (and the transport) at scrape time.
  const stopEventMetrics = registerEventMetrics({ db, events });
  lifecycle.onShutdown({ name: 'event-metrics', close: async () => stopEventMetrics() });
  return { config, logger, db, redis, flags, lifecycle, events, ...edge };
}

export interface Modules {
  routes: ModuleRoutes[];
  authenticator: Authenticator;
  /** Per-org rate limits from the org's plan (billing, later); configuration when absent. */
  rateLimits?: RateLimitResolver;
}

/** Wires the modules to the platform and to each other's facades, explicitly, in dependency order. */
/** Seams for modules that are not built yet (billing's plan limits). */
export interface ModuleSeams {
  entitlements?: Entitlements;
  /** Replaces the SMTP_URL-selected mailer (tests read what was sent). */
  mailer?: Mailer;
}

export function createModules(platform: Platform, seams: ModuleSeams = {}): Modules {
  const { db, redis, logger, config } = platform;
  const audit = createAudit({ db });
  const identity = createIdentity({
    db,
    redis,
    redisPolicy: platform.policies.redis,
    redisPrefix: config.redisPrefix,
    logger,
    audit,
    throttle: config.loginThrottle,
  });
  const tenancy = createTenancy({ db, audit, identity, outbox: platform.events });
  const projects = createProjects({
    db,
    audit,
    outbox: platform.events,
    cache: platform.cache,
    isMember: isMemberVia(tenancy.service.getMember),
    entitlements: seams.entitlements,
  });
  const notifications = createNotifications({ db, audit, logger, config, policies: platform.policies, events: platform.events, mailer: seams.mailer });
  return {
    routes: [identity.routes, ...tenancy.routes, audit.routes, projects.routes, notifications.routes],
    authenticator: tenancy.authenticator,
  };
}

/** Builds the HTTP app for a platform (used by `plinth start` and by tests through app.inject). */
export async function createApiApp(platform: Platform, modules: Modules = createModules(platform)): Promise<App> {
  const { config, logger, db, redis, flags, lifecycle, events } = platform;
  return buildApp({
    config,
    logger,
    db,
    redis,
    flags,
    lifecycle: lifecycle.state,
    modules: modules.routes,
    authenticator: modules.authenticator,
    events,
    redisPolicy: platform.policies.redis,
    rateLimits: modules.rateLimits,
  });
}

/** The API role: modules, HTTP listener, closed first on shutdown. */
export async function startApi(platform: Platform, modules: Modules = createModules(platform)): Promise<App> {
  const app = await createApiApp(platform, modules);
  platform.lifecycle.onShutdown({ name: 'http', close: () => app.close() });
  await app.listen({ port: platform.config.port, host: platform.config.host });
  return app;
}
