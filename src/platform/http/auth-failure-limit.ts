import type { FastifyReply, FastifyRequest } from 'fastify';
import { rateLimitRejections } from '../observability/metrics.ts';
import type { AuthFailureGate } from './auth.ts';
import { AppError } from './errors.ts';
import type { RateLimitCheck, RateLimitDecision, RateLimitPolicy, RateLimitStore } from './rate-limit-store.ts';
import type { App } from './server.ts';

const SCOPE = 'auth-failures';

interface PendingGate {
  /** The budget as one bucket of the rate limiter's batch. */
  check: RateLimitCheck;
  /** Records the decision; throws the 429 when the budget is spent. */
  settle(decision: RateLimitDecision): void;
}

const pending = new WeakMap<FastifyRequest, PendingGate>();

/**
 * The auth-failure budget of a request whose authorization was answered from memory (no lookup left the
 * process, so nothing has checked it yet): the rate limiter folds it into its single round trip.
 */
export function uncheckedAuthFailureGate(request: FastifyRequest): PendingGate | undefined {
  return request.authFailureGate?.checked === false ? pending.get(request) : undefined;
}

/**
 * Per client IP, a budget of failed authentications (401) and authorization misses (403/404 from the
 * authorization hook) per window. Only failures consume it; once it is spent, every protected /v1
 * request from that IP is answered 429 before any token or membership lookup reaches the database:
 * the authorization hook checks it before the first lookup its caches cannot answer (and before
 * answering a refusal), and when everything came from memory the rate limiter checks it in the same
 * Redis round trip as the request's own quotas (a "gate": refused ⇒ nothing consumed). So guessing
 * tokens or probing other orgs' ids costs the attacker a 429 and the database nothing, and a request
 * served from the caches still costs one round trip. Same store as the other limits (Redis shared by all
 * instances when configured, memory otherwise).
 */
export function registerAuthFailureLimit(app: App, opts: { store: RateLimitStore; policy: RateLimitPolicy }): void {
  const { store, policy } = opts;
  const key = (request: FastifyRequest) => `authfail:ip:${request.ip}`;
  const policyHeader = `"${SCOPE}";q=${policy.quota};w=${policy.windowSec}`;
  const guarded = (request: FastifyRequest) => request.routeOptions.url?.startsWith('/v1') === true && !request.routeOptions.config?.public;

  function refusal(reply: FastifyReply, d: RateLimitDecision): AppError {
    rateLimitRejections.inc({ scope: SCOPE });
    reply.header('ratelimit-policy', policyHeader).header('ratelimit', `"${SCOPE}";r=0;t=${d.resetSec}`);
    return new AppError(
      'RATE_LIMIT.AUTH_FAILURES',
      429,
      `Too many failed authentication or authorization attempts from this address (${policy.quota} per ${policy.windowSec} s); retry after ${d.retryAfterSec} s`,
      { limit: SCOPE },
      { 'retry-after': String(d.retryAfterSec) },
    );
  }

  app.addHook('onRequest', async (request: FastifyRequest, reply: FastifyReply) => {
    if (!guarded(request)) return;
    let checked = false;
    const settle = (d: RateLimitDecision) => {
      checked = true;
      if (!d.allowed) throw refusal(reply, d);
    };
    const gate: AuthFailureGate = {
      get checked() {
        return checked;
      },
      async check() {
        if (!checked) settle(await store.peek(key(request), policy));
      },
    };
    request.authFailureGate = gate;
    pending.set(request, { check: { key: key(request), policy, mode: 'gate' }, settle });
  });

  app.addHook('onSend', async (request, reply, payload) => {
    if (!request.authFailed || reply.statusCode === 429) return payload;
    const d = await store.consume(key(request), policy);
    reply.header('ratelimit-policy', policyHeader).header('ratelimit', `"${SCOPE}";r=${d.remaining};t=${d.resetSec}`);
    return payload;
  });
}
