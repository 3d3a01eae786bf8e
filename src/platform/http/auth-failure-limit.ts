import type { FastifyReply, FastifyRequest } from 'fastify';
import { rateLimitRejections } from '../observability/metrics.ts';
import { AppError } from './errors.ts';
import type { RateLimitPolicy, RateLimitStore } from './rate-limit-store.ts';
import type { App } from './server.ts';

const SCOPE = 'auth-failures';

/**
 * Per client IP, a budget of failed authentications (401) and authorization misses (403/404 from the
 * authorization hook) per window. Only failures consume it; once it is spent, every protected /v1
 * request from that IP is answered 429 in `onRequest`, before the token or membership lookup runs, so
 * guessing tokens or probing other orgs' ids costs the attacker a 429 and the database nothing.
 * Same store as the other limits (Redis shared by all instances when configured, memory otherwise).
 */
export function registerAuthFailureLimit(app: App, opts: { store: RateLimitStore; policy: RateLimitPolicy }): void {
  const { store, policy } = opts;
  const key = (request: FastifyRequest) => `authfail:ip:${request.ip}`;
  const policyHeader = `"${SCOPE}";q=${policy.quota};w=${policy.windowSec}`;
  const guarded = (request: FastifyRequest) => request.routeOptions.url?.startsWith('/v1') === true && !request.routeOptions.config?.public;

  app.addHook('onRequest', async (request: FastifyRequest, reply: FastifyReply) => {
    if (!guarded(request)) return;
    const d = await store.peek(key(request), policy);
    if (d.allowed) return;
    rateLimitRejections.inc({ scope: SCOPE });
    reply.header('ratelimit-policy', policyHeader).header('ratelimit', `"${SCOPE}";r=0;t=${d.resetSec}`);
    throw new AppError(
      'RATE_LIMIT.AUTH_FAILURES',
      429,
      `Too many failed authentication or authorization attempts from this address (${policy.quota} per ${policy.windowSec} s); retry after ${d.retryAfterSec} s`,
      { limit: SCOPE },
      { 'retry-after': String(d.retryAfterSec) },
    );
  });

  app.addHook('onSend', async (request, reply, payload) => {
    if (!request.authFailed || reply.statusCode === 429) return payload;
    const d = await store.consume(key(request), policy);
    reply.header('ratelimit-policy', policyHeader).header('ratelimit', `"${SCOPE}";r=${d.remaining};t=${d.resetSec}`);
    return payload;
  });
}
