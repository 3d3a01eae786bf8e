import path from 'node:path';
import type { Logger } from 'pino';
import { buildApp } from './app.ts';
import type { ModuleRoutes } from './platform/http/module-routes.ts';
import { loadConfig, type Config } from './platform/config.ts';
import { checkAppLogin } from './platform/db/app-role.ts';
import { openDatabase, type Database } from './platform/db/database.ts';
import { createMemoryLsnStore, createRedisLsnStore } from './platform/db/read-session.ts';
import { createStorage, type ObjectStorage } from './platform/storage/index.ts';
import { createFlags, type Flags } from './platform/flags/flags.ts';
import type { Authenticator } from './platform/http/auth.ts';
import { configRateLimits, type RateLimitResolver } from './platform/http/rate-limit.ts';
import type { App } from './platform/http/server.ts';
import { createEventBus, type EventBus, type EventBusDeps } from './platform/outbox/event-bus.ts';
import { createLifecycle, type Lifecycle } from './platform/lifecycle.ts';
import { checkMigrations, migrate } from './platform/migrate/migrator.ts';
import { createLogger } from './platform/observability/logger.ts';
import { registerEventMetrics } from './platform/observability/event-metrics.ts';
import { registerAuditMetrics } from './platform/observability/metrics.ts';
import { createQueryObserver } from './platform/observability/query-observer.ts';
import { createTenantCosts, type TenantCosts } from './platform/observability/tenant-costs.ts';
import { replicaRoutingMetrics } from './platform/observability/metrics.ts';
import { shutdownTracing } from './platform/observability/tracing.ts';
import { createRedis, type Redis } from './platform/redis.ts';
import { createCache, type CacheProvider } from './platform/cache/cache.ts';
import { createMemoryInvalidationBus, createRedisInvalidationBus, type InvalidationBus } from './platform/cache/invalidation-bus.ts';
import { createOutboundPolicies, type OutboundPolicies } from './platform/resilience/policy.ts';
import type { ModuleSurface } from './platform/module.ts';
import type { JobRegistry } from './platform/outbox/registry.ts';
import { AUDIT_EVENT_RECORDED, createAudit, type Audit } from './modules/audit/index.ts';
import { createBilling, createGateway, DEFAULT_BILLING_CONFIG, stripeGateway, guardedGateway, type BillingModule, type GatewayName, type PaymentGateway, type PaymentUpdates } from './modules/billing/index.ts';
import { createDirectory, type DirectoryModule } from './modules/directory/index.ts';
import { createIdentity, type Identity } from './modules/identity/index.ts';
import { chainBackfill, createIntegrations, membersBackfill, orgBackfill, peopleFrom, projectsBackfill, type IntegrationsDeps, type IntegrationsModule } from './modules/integrations/index.ts';
import { createMailer, createNotifications, type Mailer, type NotificationsModule } from './modules/notifications/index.ts';
import { createProjects, entitlementsVia, isMemberVia, type Entitlements, type ProjectsModule } from './modules/projects/index.ts';
import { createReporting, type Reporting } from './modules/reporting/index.ts';
import { createSso, type Sso, type SsoSettings, type TxtResolver } from './modules/sso/index.ts';
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
  /** Cross-process invalidation of process-local caches (Redis pub/sub; in-process when embedded). */
  invalidations: InvalidationBus;
  /** File storage (exports): the filesystem under the data dir, or S3; and the routes it serves (fs downloads). */
  storage: ObjectStorage;
  storageRoutes: ModuleRoutes[];
}

/** The edge pieces every process shares: outbound policies, the cache over them, invalidations, file storage. */
export function createEdgePlatform(
  config: Config,
  logger: Logger,
  redis: Redis | undefined,
): Pick<Platform, 'policies' | 'cache' | 'invalidations' | 'storage' | 'storageRoutes'> {
  const policies = createOutboundPolicies(logger);
  const l1TtlMs = config.edge.cacheL1TtlMs;
  const invalidations = redis
    ? createRedisInvalidationBus({ redis, prefix: config.redisPrefix, logger, retryForMs: l1TtlMs })
    : createMemoryInvalidationBus();
  const cache = createCache({ redis, policy: policies.redis, prefix: config.redisPrefix, l1TtlMs, logger, bus: invalidations });
  const { storage, routes: storageRoutes } = createStorage(config.reporting.storage, config.notifications.publicUrl);
  return { policies, cache, invalidations, storage, storageRoutes };
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
  let redis: Redis | undefined;
  if (config.redisUrl) {
    const client = createRedis(config.redisUrl);
    redis = client;
    lifecycle.onShutdown({ name: 'redis', close: async () => void (await client.quit().catch(() => client.disconnect())) });
  }
  const db = opts.db ?? (await openConfiguredDatabase(config, logger, lifecycle, opts.migrate, redis));
  const flags = await createFlags({ db });
  lifecycle.onShutdown({ name: 'flags', close: () => flags.close() });
  const edge = createEdgePlatform(config, logger, redis);
  lifecycle.onShutdown({ name: 'cache', close: async () => void (await edge.cache.close(), await edge.invalidations.close()) });
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

async function openConfiguredDatabase(config: Config, logger: Logger, lifecycle: Lifecycle, migrateNow?: boolean, redis?: Redis): Promise<Database> {
  const db = await openDatabase({
    databaseUrl: config.databaseUrl,
    databaseAppUrl: config.databaseAppUrl,
    replicaUrls: config.databaseReplicaUrls,
    replicaMaxLagMs: config.databaseReplicaMaxLagMs,
    // Read-your-writes across instances needs the positions in Redis; one process keeps them itself.
    lsnStore: redis ? createRedisLsnStore(redis, config.redisPrefix) : createMemoryLsnStore(),
    replicaMetrics: replicaRoutingMetrics,
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
  /** Replaces DNS for domain verification (tests: no network). */
  resolveTxt?: TxtResolver;
  /** Overrides SSO settings (tests: clock offset, skew allowance). */
  sso?: Partial<SsoSettings>;
  /** Replaces the PAYMENT_GATEWAY-selected gateway (tests: a shared sandbox, a fault-injecting wrapper). */
  gateway?: PaymentGateway;
  /** Test-only: extra connectors, faster retries. */
  integrations?: Pick<IntegrationsDeps, 'connectors' | 'delivery'>;
  /** Test-only: the payment attempts webhooks and reconciliation update (a recorder), and gateways to use. */
  payments?: { updates?: PaymentUpdates; gateways?: Partial<Record<GatewayName, PaymentGateway>> };
}

/** The modules, wired to the platform and to each other's facades, and what the app and the worker take from them. */
export interface Modules {
  audit: Audit;
  identity: Identity;
  tenancy: Tenancy;
  projects: ProjectsModule;
  billing: BillingModule;
  notifications: NotificationsModule;
  reporting: Reporting;
  sso: Sso;
  directory: DirectoryModule;
  integrations: IntegrationsModule;
  routes: ModuleRoutes[];
  authenticator: Authenticator;
  /** Per-org rate limits from the org's plan (billing, later); configuration when absent. */
  rateLimits?: RateLimitResolver;
  /** Billing's API-request meter (usage `api.requests`, hard quotas), run by the API role's app. */
  apiMeter?: BillingModule['apiMeter'];
  /** Subscribes every module's handlers and schedules; called once per process by the worker role. */
  registerJobs(jobs: JobRegistry): void;
}

/**
 * The gateways reconciliation and incoming webhooks know, each behind the shared `payment` policy (one breaker
 * and bulkhead per gateway, a cap per org): the configured one (already guarded), and Stripe whenever its key is set.
 */
function billingPayments(platform: Platform, seams: ModuleSeams, gateway: PaymentGateway): Parameters<typeof createBilling>[1] {
  const g = platform.config.paymentGateways;
  const gateways: Partial<Record<GatewayName, PaymentGateway>> = { [gateway.name]: gateway, ...seams.payments?.gateways };
  // Attempts made through Stripe stay reconcilable after PAYMENT_GATEWAY changes, as long as its key is set.
  const stripe = gateways.stripe ? undefined : stripeGateway(g);
  if (stripe) gateways.stripe = guardedGateway(stripe, platform.policies.payment);
  return {
    logger: platform.logger.child({ module: 'billing' }),
    gateways,
    defaultGateway: gateway.name,
    webhookSecrets: { stripe: g.stripeWebhookSecret, sandbox: g.sandboxWebhookSecret },
    webhookToleranceSec: g.webhookToleranceSec,
    updates: seams.payments?.updates,
  };
}

/** The configured gateway (PAYMENT_GATEWAY): the embedded sandbox, or Stripe through its SDK. */
function paymentGateway(config: Config, seams: ModuleSeams): PaymentGateway {
  return seams.gateway ?? createGateway(config.payments, config.paymentGateways);
}

/** Builds the modules in dependency order, explicitly: no container, nothing registered as a side effect. */
export function createModules(platform: Platform, seams: ModuleSeams = {}): Modules {
  const { db, logger, config, events, redis } = platform;
  // Streaming asks notifications (built later) whether an org has a webhook subscribed to its audit events.
  const audit = createAudit({ db, streaming: { events, enabledAmong: (orgIds) => notifications.subscribedAmong(orgIds, AUDIT_EVENT_RECORDED) } });
  // The audit sequencer's backlog (pending events, oldest age), read at scrape time.
  const stopAuditMetrics = registerAuditMetrics(() => audit.backlog());
  platform.lifecycle.onShutdown({ name: 'audit-metrics', close: async () => stopAuditMetrics() });
  const identity = createIdentity({
    db,
    invalidations: platform.invalidations,
    sessionCacheMaxAgeMs: config.edge.cacheL1TtlMs,
    logger,
    audit,
    throttle: config.loginThrottle,
    cache: platform.cache,
    secretKey: config.notifications.webhookSecretKey,
    events,
    storage: platform.storage,
    webauthn: config.webauthn,
  });
  // Billing and tenancy ask each other (seats ← member count, member limit ← plan): billing is built first
  // and reads the member count through a function that runs only after both exist.
  const n = config.notifications;
  const mailer = seams.mailer ?? createMailer({ smtpUrl: n.smtpUrl, from: n.mailFrom, policy: platform.policies.smtp, logger });
  // One guarded gateway: invoices, refunds and reconciliation share its breaker and bulkhead (destination gateway:<name>).
  const gateway = guardedGateway(paymentGateway(config, seams), platform.policies.payment);
  const billing = createBilling({
    db,
    audit,
    events,
    cache: platform.cache,
    seats: (orgId) => tenancy.countMembers(orgId),
    // The notifications mailer: billing's e-mails (trial ending, limit reached, dunning) go out through it.
    mailer,
    // Tests flush the API-request meter themselves (a timer would add to the usage figures they assert).
    config: { ...DEFAULT_BILLING_CONFIG, production: config.nodeEnv === 'production', apiMeterFlushMs: config.nodeEnv === 'test' ? 0 : 10_000, invoiceRunMaxPerSec: config.payments.invoiceRunMaxPerSec },
    // Invoices and payments (issue #14): the guarded gateway, PDFs in storage.
    gateway,
    storage: platform.storage,
    payments: config.payments,
  }, billingPayments(platform, seams, gateway));
  const tenancy = createTenancy({
    db,
    audit,
    identity,
    events,
    invalidations: platform.invalidations,
    accessCacheMaxAgeMs: config.edge.cacheL1TtlMs,
    memberLimit: (orgId) => billing.limitCheck(orgId, 'members'),
  });
  const projects = createProjects({
    db,
    audit,
    events,
    cache: platform.cache,
    isMember: isMemberVia(tenancy.getMember),
    entitlements: seams.entitlements ?? entitlementsVia(billing.limitCheck, billing.assertQuota),
  });
  const notifications = createNotifications({ db, audit, logger, config: n, policies: platform.policies, events, mailer });
  const reporting = createReporting({
    db,
    events,
    audit,
    logger,
    storage: platform.storage,
    config: config.reporting,
    mailer,
    getProject: (tenantId, projectId) => projects.getProject(tenantId, projectId),
    getUserEmail: async (userId) => (await identity.getUser(userId).catch(() => null))?.email ?? null,
  });
  // Running exports stop at shutdown and go back to the queue (another worker resumes them).
  platform.lifecycle.onShutdown({ name: 'reporting-exports', close: () => reporting.close() });
  const sso = createSso({
    db,
    audit,
    identity,
    tenancy,
    secretKey: n.webhookSecretKey,
    resolveTxt: seams.resolveTxt,
    settings: { publicUrl: n.publicUrl, clockSkewSec: 60, loginStateTtlSec: 600, stepUpMaxAgeSec: 900, allowInsecureIssuers: config.nodeEnv !== 'production', ...seams.sso },
    cache: platform.cache,
    redis,
    redisPolicy: platform.policies.redis,
    redisPrefix: config.redisPrefix,
    logger,
  });
  const directory = createDirectory({ db, audit, identity, tenancy });
  const integrations = createIntegrations({
    db,
    audit,
    events,
    logger,
    // The at-rest key of webhook secrets also seals connection credentials (one key to rotate).
    secretKey: n.webhookSecretKey,
    strictUrls: n.webhookStrictUrls,
    publicUrl: n.publicUrl,
    backfillSource: chainBackfill({
      org: orgBackfill((tenantId) => tenancy.getOrg(tenantId)),
      members: membersBackfill((tenantId, q) => tenancy.listMembers(tenantId, q)),
      projects: projectsBackfill((tenantId, q) => projects.listProjects(tenantId, q)),
    }),
    people: peopleFrom({ getUsers: (ids, trx) => identity.getUsers(ids, trx), rolesIn: (trx, orgId, ids) => tenancy.rolesIn(trx, orgId, ids) }),
    ...seams.integrations,
  });
  const all: ModuleSurface[] = [audit, identity, tenancy, billing, projects, notifications, reporting, sso, directory, integrations];
  return {
    audit,
    identity,
    tenancy,
    projects,
    billing,
    notifications,
    reporting,
    sso,
    directory,
    integrations,
    routes: [...all.flatMap((m) => m.routes), ...platform.storageRoutes],
    // tenancy's, with each org's security policy (sso) applied on top
    authenticator: sso.authenticator,
    // Per-org request quota from the plan (limit `api.rate`: requests per window), else configuration.
    rateLimits: configRateLimits(config.edge, { orgPolicy: (orgId) => billing.rateLimitFor(orgId, config.edge.rateLimitWindowSec) }),
    apiMeter: billing.apiMeter,
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
export async function createApiApp(platform: Platform, modules: Pick<Modules, 'routes' | 'authenticator' | 'rateLimits' | 'apiMeter'>): Promise<App> {
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
    apiMeter: modules.apiMeter,
    tenantCosts: platform.tenantCosts,
  });
}

/** The API role: modules, HTTP listener, closed first on shutdown. */
export async function startApi(platform: Platform, modules: Modules): Promise<App> {
  const app = await createApiApp(platform, modules);
  platform.lifecycle.onShutdown({ name: 'http', close: () => app.close() });
  await app.listen({ port: platform.config.port, host: platform.config.host });
  // Route schemas compile on first use; compile the rest now, in the background, between requests.
  void app.warmUpSchemas().then((n) => platform.logger.debug({ schemas: n }, 'route schemas compiled'), (err) => platform.logger.error({ err }, 'a route schema does not compile'));
  return app;
}
