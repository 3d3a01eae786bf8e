import path from 'node:path';
import type { Logger } from 'pino';
import { buildApp } from './app.ts';
import type { ModuleRoutes } from './platform/http/module-routes.ts';
import { loadConfig, type Config } from './platform/config.ts';
import { checkAppLogin } from './platform/db/app-role.ts';
import { openDatabase, type Database } from './platform/db/database.ts';
import { createFlags, type Flags } from './platform/flags/flags.ts';
import type { Authenticator } from './platform/http/auth.ts';
import type { RateLimitResolver } from './platform/http/rate-limit.ts';
import type { App } from './platform/http/server.ts';
import { createEventBus, type EventBus, type EventBusDeps } from './platform/outbox/event-bus.ts';
import { createLifecycle, type Lifecycle } from './platform/lifecycle.ts';
import { checkMigrations, migrate } from './platform/migrate/migrator.ts';
import { createLogger } from './platform/observability/logger.ts';
import { registerEventMetrics } from './platform/observability/event-metrics.ts';
import { registerAuditMetrics } from './platform/observability/metrics.ts';
import { createQueryObserver } from './platform/observability/query-observer.ts';
import { createTenantCosts, type TenantCosts } from './platform/observability/tenant-costs.ts';
import { shutdownTracing } from './platform/observability/tracing.ts';
import { createRedis, type Redis } from './platform/redis.ts';
import { createCache, type CacheProvider } from './platform/cache/cache.ts';
import { createOutboundPolicies, type OutboundPolicies } from './platform/resilience/policy.ts';
import type { ModuleSurface } from './platform/module.ts';
import type { JobRegistry } from './platform/outbox/registry.ts';
import { createAudit, type Audit } from './modules/audit/index.ts';
import { createIdentity, type Identity } from './modules/identity/index.ts';
import { createIntegrations, projectsBackfill, type IntegrationsDeps, type IntegrationsModule } from './modules/integrations/index.ts';
import { createMailer, createNotifications, type Mailer, type NotificationsModule } from './modules/notifications/index.ts';
import { allowEverything, createProjects, isMemberVia, type Entitlements, type ProjectsModule } from './modules/projects/index.ts';
import { createTenancy, type Tenancy } from './modules/tenancy/index.ts';

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
  /** What each org costs (requests, database time, jobs, storage), flushed per day to tenant_costs. */
  tenantCosts: TenantCosts;
}

/** The edge pieces every process shares: outbound policies and the cache over them. */
export function createEdgePlatform(config: Config, logger: Logger, redis: Redis | undefined): Pick<Platform, 'policies' | 'cache'> {
  const policies = createOutboundPolicies(logger);
  const cache = createCache({ redis, policy: policies.redis, prefix: config.redisPrefix, l1TtlMs: config.edge.cacheL1TtlMs, logger });
  return { policies, cache };
}

export interface PlatformOptions {
  /** Environment to read the configuration from (default process.env). */
  env?: Record<string, string | undefined>;
  /** Apply pending migrations (default MIGRATE_ON_START); false only verifies them. */
  migrate?: boolean;
  /** An already opened and migrated database (tests: a throwaway one); its owner closes it. */
  db?: Database;
  logger?: Logger;
  /** Test-only event bus tuning (schedule tick, sweep cadence). */
  events?: Partial<Pick<EventBusDeps, 'scheduleTickMs' | 'sweepEveryMs'>>;
}

/** Config → logger → database (migrated) → Redis → flags, policies, cache, event bus. Every process role's kernel. */
export async function openPlatform(opts: PlatformOptions = {}): Promise<Platform> {
  const config = loadConfig(opts.env ?? process.env);
  const logger = opts.logger ?? createLogger(config.logLevel);
  const lifecycle = createLifecycle({ logger, graceMs: config.shutdownGraceMs, delayMs: config.shutdownDelayMs });
  // Registered first so it closes last: spans from the rest of the shutdown are still exported.
  lifecycle.onShutdown({ name: 'tracing', close: shutdownTracing });
  const db = opts.db ?? (await openConfiguredDatabase(config, logger, lifecycle, opts.migrate));
  let redis: Redis | undefined;
  if (config.redisUrl) {
    const client = createRedis(config.redisUrl);
    redis = client;
    lifecycle.onShutdown({ name: 'redis', close: async () => void (await client.quit().catch(() => client.disconnect())) });
  }
  const flags = await createFlags({ db });
  lifecycle.onShutdown({ name: 'flags', close: () => flags.close() });
  const edge = createEdgePlatform(config, logger, redis);
  lifecycle.onShutdown({ name: 'cache', close: () => edge.cache.close() });
  const events = createEventBus({ config, logger, db, ...opts.events });
  // Ramps move (or pause on their error-rate guard) from the worker role, one runner per tick.
  events.schedule('platform.flags_ramp', { everyMs: 60_000 }, async () => void (await flags.tickRamps()));
  events.schedule('platform.flags_exposures_prune', { cron: '43 4 * * *' }, () => flags.pruneExposures(7));
  const tenantCosts = createTenantCosts({ db });
  lifecycle.onShutdown({ name: 'tenant-costs', close: () => tenantCosts.close() });
  events.schedule('platform.tenant_storage', { cron: '23 2 * * *' }, async () => void (await tenantCosts.measureStorage()));
  lifecycle.onShutdown({ name: 'jobs', close: () => events.close() });
  // Outbox backlog/age and job counts by state, read from Postgres (and the transport) at scrape time.
  const stopEventMetrics = registerEventMetrics({ db, events });
  lifecycle.onShutdown({ name: 'event-metrics', close: async () => stopEventMetrics() });
  return { config, logger, db, redis, flags, lifecycle, events, tenantCosts, ...edge };
}

async function openConfiguredDatabase(config: Config, logger: Logger, lifecycle: Lifecycle, migrateNow?: boolean): Promise<Database> {
  const db = await openDatabase({
    databaseUrl: config.databaseUrl,
    databaseAppUrl: config.databaseAppUrl,
    replicaUrls: config.databaseReplicaUrls,
    poolMax: config.databasePoolMax,
    dataDir: config.databaseUrl ? undefined : path.join(config.dataDir, 'pgdata'),
    onQuery: createQueryObserver({ logger, slowQueryMs: config.slowQueryMs }),
  });
  lifecycle.onShutdown({ name: 'database', close: () => db.close() });
  const { newer } = (migrateNow ?? config.migrateOnStart)
    ? await migrate(db.owner, { kind: db.kind }, { log: (msg) => logger.info(msg), lockTimeoutMs: config.migrationLockTimeoutMs })
    : await checkMigrations(db.owner);
  if (newer.length > 0) logger.warn({ newer }, 'running beside expand migrations of a newer release (rollback)');
  // Refuse to start (one line) on a wrong app-role login rather than run and fail every request.
  if (!migrateNow) await checkAppLogin(db);
  return db;
}

/** Seams for modules that are not built yet (billing's plan limits) and for tests. */
export interface ModuleSeams {
  entitlements?: Entitlements;
  /** Replaces the SMTP_URL-selected mailer (tests read what was sent). */
  mailer?: Mailer;
  /** Test-only: extra connectors, faster retries. */
  integrations?: Pick<IntegrationsDeps, 'connectors' | 'delivery'>;
}

/** The modules, wired to the platform and to each other's facades, and what the app and the worker take from them. */
export interface Modules {
  audit: Audit;
  identity: Identity;
  tenancy: Tenancy;
  projects: ProjectsModule;
  notifications: NotificationsModule;
  integrations: IntegrationsModule;
  routes: ModuleRoutes[];
  authenticator: Authenticator;
  /** Per-org rate limits from the org's plan (billing, later); configuration when absent. */
  rateLimits?: RateLimitResolver;
  /** Subscribes every module's handlers and schedules; called once per process by the worker role. */
  registerJobs(jobs: JobRegistry): void;
}

/** Builds the modules in dependency order, explicitly: no container, nothing registered as a side effect. */
export function createModules(platform: Platform, seams: ModuleSeams = {}): Modules {
  const { db, redis, logger, config, events } = platform;
  const audit = createAudit({ db });
  // The audit sequencer's backlog (pending events, oldest age), read at scrape time.
  const stopAuditMetrics = registerAuditMetrics(() => audit.backlog());
  platform.lifecycle.onShutdown({ name: 'audit-metrics', close: async () => stopAuditMetrics() });
  const identity = createIdentity({
    db,
    redis,
    redisPolicy: platform.policies.redis,
    redisPrefix: config.redisPrefix,
    logger,
    audit,
    throttle: config.loginThrottle,
  });
  const tenancy = createTenancy({ db, audit, identity, events });
  const projects = createProjects({
    db,
    audit,
    events,
    cache: platform.cache,
    isMember: isMemberVia(tenancy.getMember),
    entitlements: seams.entitlements ?? allowEverything,
  });
  const n = config.notifications;
  const mailer = seams.mailer ?? createMailer({ smtpUrl: n.smtpUrl, from: n.mailFrom, policy: platform.policies.smtp, logger });
  const notifications = createNotifications({ db, audit, logger, config: n, policies: platform.policies, events, mailer });
  const integrations = createIntegrations({
    db,
    audit,
    events,
    logger,
    // The at-rest key of webhook secrets also seals connection credentials (one key to rotate).
    secretKey: n.webhookSecretKey,
    strictUrls: n.webhookStrictUrls,
    publicUrl: n.publicUrl,
    backfillSource: projectsBackfill((tenantId, q) => projects.listProjects(tenantId, q)),
    ...seams.integrations,
  });
  const all: ModuleSurface[] = [audit, identity, tenancy, projects, notifications, integrations];
  return {
    audit,
    identity,
    tenancy,
    projects,
    notifications,
    integrations,
    routes: all.flatMap((m) => m.routes),
    authenticator: tenancy.authenticator,
    registerJobs(jobs) {
      for (const m of all) m.registerJobs(jobs);
    },
  };
}

export interface ComposeOptions extends PlatformOptions {
  seams?: ModuleSeams;
}

/** The one composition every entry point (start, worker, CLIs, seed) and the test platform use. */
export async function compose(opts: ComposeOptions = {}): Promise<{ platform: Platform; modules: Modules }> {
  const platform = await openPlatform(opts);
  return { platform, modules: createModules(platform, opts.seams) };
}

/** Builds the HTTP app for a platform (used by `plinth start` and by tests through app.inject). */
export async function createApiApp(platform: Platform, modules: Pick<Modules, 'routes' | 'authenticator' | 'rateLimits'>): Promise<App> {
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
    tenantCosts: platform.tenantCosts,
  });
}

/** The API role: modules, HTTP listener, closed first on shutdown. */
export async function startApi(platform: Platform, modules: Modules): Promise<App> {
  const app = await createApiApp(platform, modules);
  platform.lifecycle.onShutdown({ name: 'http', close: () => app.close() });
  await app.listen({ port: platform.config.port, host: platform.config.host });
  return app;
}
