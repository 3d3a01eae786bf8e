import type { Logger } from 'pino';
import type { preHandlerHookHandler } from 'fastify';
import type { Config } from './platform/config.ts';
import type { Database } from './platform/db/database.ts';
import type { Exposures, Flags } from './platform/flags/flags.ts';
import { newReadSession } from './platform/db/read-session.ts';
import { runInRequestContext } from './platform/request-context.ts';
import { registerFlagRoutes } from './platform/flags/flags.routes.ts';
import { registerDeprecations } from './platform/http/deprecation.ts';
import { registerTenantCostRoutes } from './platform/observability/tenant-costs.routes.ts';
import type { TenantCosts } from './platform/observability/tenant-costs.ts';
import { registerAuthorization, type Authenticator } from './platform/http/auth.ts';
import { registerEdgeProtection } from './platform/http/edge.ts';
import type { RateLimitResolver } from './platform/http/rate-limit.ts';
import { registerHealthRoutes } from './platform/http/health.ts';
import type { ModuleRoutes } from './platform/http/module-routes.ts';
import { createHttpServer, type App } from './platform/http/server.ts';
import type { LifecycleState } from './platform/lifecycle.ts';
import { jobsAdminRoutes, registerQueueDashboard } from './platform/outbox/admin-routes.ts';
import type { EventBus } from './platform/outbox/event-bus.ts';
import { parseTraceparent, runInEventContext } from './platform/outbox/event-context.ts';
import { registerObservability } from './platform/observability/http-observability.ts';
import { pingRedis, type Redis } from './platform/redis.ts';
import type { ResiliencePolicy } from './platform/resilience/policy.ts';

export interface AppDeps {
  config: Config;
  logger: Logger;
  db: Database;
  redis?: Redis;
  flags: Flags;
  lifecycle: LifecycleState;
  modules: ModuleRoutes[];
  /** From the identity module: turns a bearer token into a principal and org access. */
  authenticator: Authenticator;
  /** The event bus: its operator routes (/v1/admin/jobs) and queue dashboard (/admin/queues). */
  events?: EventBus;
  /** Edge protection: the process's Redis policy (shared breaker) and, later, plan-aware rate limits. */
  redisPolicy: ResiliencePolicy;
  rateLimits?: RateLimitResolver;
  tenantCosts?: TenantCosts;
  /** Billing's API-request meter: counts each authorized org request, refuses those over a hard quota (402). */
  apiMeter?: { admit(orgId: string): Promise<void> | void; start(): void; stop(): Promise<void> };
}

/** Platform plugins first, then each module's routes. No business logic lives here. */
export async function buildApp(deps: AppDeps): Promise<App> {
  const app = await createHttpServer({ config: deps.config, logger: deps.logger, lifecycle: deps.lifecycle });
  // Before any route: deprecated operations are marked in OpenAPI when they are added.
  registerDeprecations(app, { db: deps.db });
  // First, so every route after it is measured (and /readyz reports readiness).
  registerObservability(app, { db: deps.db, metricsToken: deps.config.metricsToken });
  const redis = deps.redis;
  registerHealthRoutes(app, {
    lifecycle: deps.lifecycle,
    checks: { database: () => deps.db.ping() },
    optionalChecks: redis ? { redis: () => pingRedis(redis) } : {},
  });
  registerAuthorization(app, deps.authenticator);
  // After authorization: 401/403 never consume quota or idempotency keys.
  await registerEdgeProtection(app, {
    edge: deps.config.edge,
    redisPrefix: deps.config.redisPrefix,
    db: deps.db,
    redis,
    redisPolicy: deps.redisPolicy,
    logger: deps.logger,
    rateLimits: deps.rateLimits,
  });
  const apiMeter = deps.apiMeter;
  if (apiMeter) {
    // After authorization and the rate limit (a route's own preHandler runs after the app's); billing's own
    // routes stay open so an org can lift its quota. Attached per route when it is added, so a request asks
    // nothing about its route. A callback hook: admit answers synchronously in the common case (cached
    // snapshot and usage), sparing every request a promise chain.
    const meter: preHandlerHookHandler = (request, _reply, done) => {
      if (!request.access) return done();
      let pending: Promise<void> | void;
      try {
        pending = apiMeter.admit(request.access.orgId);
      } catch (err) {
        return done(err as Error);
      }
      if (pending) pending.then(() => done(), done);
      else done();
    };
    app.addHook('onRoute', (route) => {
      if (route.url.includes('/billing/')) return;
      route.preHandler = route.preHandler === undefined ? [meter] : [...(Array.isArray(route.preHandler) ? route.preHandler : [route.preHandler]), meter];
    });
    apiMeter.start();
    app.addHook('onClose', () => apiMeter.stop());
  }
  registerFlagRoutes(app, deps.flags);
  // Events added while handling a request carry its id and trace context into their handlers.
  // Flags rolled out to a request are counted with its outcome: a ramp's error-rate guard reads that.
  const exposures = new WeakMap<object, Exposures>();
  app.addHook('onRequest', (request, _reply, done) => {
    const exposed: Exposures = {};
    exposures.set(request, exposed);
    // …and get a slot for the request's unit of work (the idempotency layer opens one: one transaction).
    // …and a read session: reads after this principal's writes wait for a replica that replayed them.
    const principal = () => (request.principal ? (request.principal.apiKeyId ? `k:${request.principal.apiKeyId}` : `u:${request.principal.userId}`) : undefined);
    const mutating = request.method !== 'GET' && request.method !== 'HEAD';
    // One store for all of them (request-context.ts): every promise the request creates copies one.
    runInRequestContext({ readSession: newReadSession(principal, mutating), uowSlot: {}, exposures: exposed }, () =>
      runInEventContext({ requestId: request.id, traceparent: parseTraceparent(request.headers.traceparent) }, done),
    );
  });
  app.addHook('onResponse', async (request, reply) => {
    const exposed = exposures.get(request);
    if (exposed) deps.flags.recordOutcome(exposed, reply.statusCode >= 500);
    if (request.access) deps.db.costs.request(request.access.orgId, reply.elapsedTime);
  });
  if (deps.tenantCosts) registerTenantCostRoutes(app, deps.tenantCosts);
  if (deps.events) {
    await app.register(jobsAdminRoutes(deps.events), { prefix: '/v1/admin/jobs' });
    await registerQueueDashboard(app, deps.events, deps.authenticator);
  }
  for (const mod of deps.modules) {
    await app.register(mod.plugin, { prefix: mod.prefix });
  }
  await app.ready();
  return app;
}
