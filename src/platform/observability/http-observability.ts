import { trace } from '@opentelemetry/api';
import type { FastifyReply, FastifyRequest } from 'fastify';
import { AppError } from '../http/errors.ts';
import type { App } from '../http/server.ts';
import { bearerMatches } from './metrics-server.ts';
import {
  httpRequestsInFlight,
  METRICS_CONTENT_TYPE,
  observeHttpRequest,
  readinessStatus,
  readinessTransitions,
  registerPoolMetrics,
  scrape,
  startDefaultMetrics,
  type PoolSource,
} from './metrics.ts';

export interface ObservabilityOptions {
  /** The database whose pool is reported (`plinth_db_pool_*`). */
  db: PoolSource;
  /** When set, GET /metrics requires `Authorization: Bearer <token>` (METRICS_TOKEN). */
  metricsToken?: string;
}

function onResponseClosed(): void {
  httpRequestsInFlight.dec();
}

const kLogBound = 'plinthLogBound';
declare module 'fastify' {
  interface FastifyRequest {
    [kLogBound]: boolean;
  }
}

function bindPrincipal(request: FastifyRequest, reply: FastifyReply): void {
  const principal = request.principal;
  if (!principal || request[kLogBound]) return;
  request[kLogBound] = true;
  const tenantId = request.access?.orgId;
  const ids = tenantId ? { userId: principal.userId, tenantId } : { userId: principal.userId };
  request.log = request.log.child(ids);
  reply.log = request.log;
  trace.getActiveSpan()?.setAttributes(tenantId ? { 'enduser.id': principal.userId, 'plinth.tenant.id': tenantId } : { 'enduser.id': principal.userId });
}

function bindPrincipalHook(request: FastifyRequest, reply: FastifyReply, done: () => void): void {
  bindPrincipal(request, reply);
  done();
}

/**
 * Metrics, log context and readiness signals for the HTTP kernel. Register right after
 * createHttpServer, before any other route, so every route is measured:
 * - `plinth_http_request_duration_seconds{method,route,status_class}` with the route *template*
 *   (`/v1/orgs/:orgId/projects`), `unmatched` for 404s — never the raw URL;
 * - `plinth_http_requests_in_flight`, decremented when the response closes (also on client abort);
 * - `plinth_readiness_status` / `_transitions_total` from each /readyz answer;
 * - log lines of a request carry `userId` and `tenantId` once the kernel has authenticated it;
 * - GET /metrics (Prometheus text), optionally behind a bearer token.
 */
export function registerObservability(app: App, opts: ObservabilityOptions): void {
  startDefaultMetrics();
  const unregisterPool = registerPoolMetrics(opts.db);
  app.addHook('onClose', async () => unregisterPool());

  app.addHook('onRequest', (request, reply, done) => {
    httpRequestsInFlight.inc();
    reply.raw.on('close', onResponseClosed);
    done();
  });

  app.addHook('onResponse', (request, reply, done) => {
    observeHttpRequest(request.method, request.routeOptions.url ?? 'unmatched', reply.statusCode, reply.elapsedTime / 1000);
    done();
  });

  // Who the request acted for, on every later log line of the request (handler logs and the final
  // 'request completed') and on its span. The kernel authenticates in a global preHandler; a route-level
  // preHandler runs after it, and onSend catches answers that ended early (403) with a principal known.
  app.decorateRequest(kLogBound, false);
  app.addHook('onRoute', (route) => {
    if (!route.config?.permission) return;
    const existing = route.preHandler ? (Array.isArray(route.preHandler) ? route.preHandler : [route.preHandler]) : [];
    route.preHandler = [...existing, bindPrincipalHook];
  });
  app.addHook('onSend', (request, reply, payload, done) => {
    bindPrincipal(request, reply);
    done(null, payload);
  });

  let lastReady: boolean | undefined;
  app.addHook('onRoute', (route) => {
    if (route.url !== '/readyz') return;
    const existing = route.onResponse ? (Array.isArray(route.onResponse) ? route.onResponse : [route.onResponse]) : [];
    route.onResponse = [
      ...existing,
      async (_request: FastifyRequest, reply: FastifyReply) => {
        const ready = reply.statusCode < 400;
        readinessStatus.set(ready ? 1 : 0);
        if (lastReady !== undefined && lastReady !== ready) readinessTransitions.inc();
        lastReady = ready;
      },
    ];
  });

  app.get(
    '/metrics',
    { schema: { hide: true }, config: { public: true }, logLevel: 'warn' },
    async (request, reply) => {
      if (opts.metricsToken && !bearerMatches(request.headers.authorization, opts.metricsToken)) {
        throw new AppError('METRICS.UNAUTHORIZED', 401, 'A valid metrics bearer token is required', {}, { 'www-authenticate': 'Bearer' });
      }
      const body = await scrape();
      return reply.type(METRICS_CONTENT_TYPE).header('cache-control', 'no-store').send(body);
    },
  );
}
