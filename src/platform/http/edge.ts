import underPressure from '@fastify/under-pressure';
import type { FastifyReply, FastifyRequest } from 'fastify';
import type { Database } from '../db/database.ts';
import type { Logger } from 'pino';
import type { EdgeConfig } from '../config.ts';
import type { Redis } from '../redis.ts';
import type { ResiliencePolicy } from '../resilience/policy.ts';
import { buildProblem } from './errors.ts';
import { registerAuthFailureLimit } from './auth-failure-limit.ts';
import { registerIdempotency } from './idempotency.ts';
import { registerInFlightLimit } from './in-flight.ts';
import { configRateLimits, registerRateLimit, type RateLimitResolver } from './rate-limit.ts';
import { createMemoryRateLimitStore, createResilientRateLimitStore, type RateLimitStore } from './rate-limit-store.ts';
import { createLeasingRateLimitStore } from './rate-limit-lease.ts';
import type { App } from './server.ts';

export interface EdgeDeps {
  edge: EdgeConfig;
  redisPrefix: string;
  db: Database;
  redis?: Redis;
  /** The process's Redis policy (shared breaker with the cache). */
  redisPolicy: ResiliencePolicy;
  logger: Logger;
  /** Plan-aware limits later; configuration by default. */
  rateLimits?: RateLimitResolver;
}

/** Paths that must answer even under pressure: the orchestrator would otherwise restart a busy process. */
const PRESSURE_EXEMPT = new Set(['/livez']);

/**
 * Backpressure (503 instead of queueing), then — after the authorization hook, so 401/403 cost nothing —
 * rate limits and Idempotency-Key, for every module's routes. Call once, after registerAuthorization.
 */
export async function registerEdgeProtection(app: App, deps: EdgeDeps): Promise<{ rateLimitStore: RateLimitStore }> {
  const { edge } = deps;
  registerInFlightLimit(app, { max: edge.maxInFlight, retryAfterSec: 1 });
  // Fixed thresholds, opt-in (all 0 by default): the adaptive concurrency limit (concurrency-limit.ts,
  // registered by the HTTP kernel) is what sheds load in production.
  if (edge.pressureMaxEventLoopDelayMs > 0 || edge.pressureMaxHeapBytes > 0 || edge.pressureMaxRssBytes > 0) {
    let delaySampled = false;
    const probe = setInterval(() => {
      delaySampled = Number.isFinite(app.memoryUsage().eventLoopDelay);
      if (delaySampled) clearInterval(probe);
    }, 100).unref();
    app.addHook('onClose', async () => clearInterval(probe));
    await app.register(underPressure, {
      maxEventLoopDelay: edge.pressureMaxEventLoopDelayMs,
      maxHeapUsedBytes: edge.pressureMaxHeapBytes,
      maxRssBytes: edge.pressureMaxRssBytes,
      sampleInterval: 200,
      // Returning a body makes under-pressure send it (its typings say void; undefined lets the request through).
      pressureHandler: ((request: FastifyRequest, reply: FastifyReply, type: string, value: number | undefined) => {
        if (PRESSURE_EXEMPT.has(request.url.split('?')[0] ?? '')) return undefined;
        // Before its first real sample the delay reads as Infinity (empty histogram, e.g. right after
        // start): nothing was measured, so nothing is shed.
        if (type === 'eventLoopDelay' && !Number.isFinite(value) && !delaySampled) return undefined;
        request.log.warn({ pressure: type, value }, 'under pressure: shedding request');
        reply.code(503).header('retry-after', String(edge.pressureRetryAfterSec)).type('application/problem+json; charset=utf-8');
        return buildProblem(503, 'HTTP.OVERLOADED', 'The server is overloaded; retry after the Retry-After delay', request.id);
      }) as never,
    });
  }

  // With Redis, busy keys draw local leases of cells (one round trip per lease, not per request); the
  // in-memory store is already local.
  const rateLimitStore = deps.redis
    ? withLeases(createResilientRateLimitStore({ redis: deps.redis, prefix: deps.redisPrefix, policy: deps.redisPolicy, logger: deps.logger }), edge)
    : createMemoryRateLimitStore();
  if (edge.rateLimitEnabled) {
    registerRateLimit(app, { store: rateLimitStore, resolver: deps.rateLimits ?? configRateLimits(edge) });
    registerAuthFailureLimit(app, { store: rateLimitStore, policy: { quota: edge.rateLimitAuthFailures, windowSec: edge.rateLimitWindowSec } });
  }
  registerIdempotency(app, { database: deps.db, ttlSec: edge.idempotencyTtlSec, leaseSec: edge.idempotencyLeaseSec, logger: deps.logger });
  return { rateLimitStore };
}

function withLeases(store: RateLimitStore, edge: EdgeConfig): RateLimitStore {
  if (edge.rateLimitLeasePercent === 0) return store;
  return createLeasingRateLimitStore(store, { leasePercent: edge.rateLimitLeasePercent, leaseMs: edge.rateLimitLeaseMs });
}
