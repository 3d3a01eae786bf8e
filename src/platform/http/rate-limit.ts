import type { FastifyReply, FastifyRequest } from 'fastify';
import type { EdgeConfig } from '../config.ts';
import { AppError } from './errors.ts';
import { uncheckedAuthFailureGate } from './auth-failure-limit.ts';
import type { RateLimitCheck, RateLimitDecision, RateLimitPolicy, RateLimitStore } from './rate-limit-store.ts';
import type { App } from './server.ts';
import { rateLimitRejections } from '../observability/metrics.ts';

export type RateLimitScope = 'principal' | 'org' | 'ip';

/**
 * Where limits come from. The default reads configuration; a plan-aware resolver (billing, later) can
 * return a per-org policy — e.g. `orgPolicy: (orgId) => plans.rateLimitFor(orgId)`.
 */
export interface RateLimitResolver {
  policyFor(scope: RateLimitScope, request: FastifyRequest): Promise<RateLimitPolicy> | RateLimitPolicy;
}

export function configRateLimits(
  edge: EdgeConfig,
  overrides: { orgPolicy?: (orgId: string) => Promise<RateLimitPolicy | undefined> | RateLimitPolicy | undefined } = {},
): RateLimitResolver {
  const fixed: Record<RateLimitScope, RateLimitPolicy> = {
    principal: { quota: edge.rateLimitPrincipal, windowSec: edge.rateLimitWindowSec },
    org: { quota: edge.rateLimitOrg, windowSec: edge.rateLimitWindowSec },
    ip: { quota: edge.rateLimitIp, windowSec: edge.rateLimitWindowSec },
  };
  // Not async: asked on every request, and a plan's policy is usually at hand (the org's cached snapshot).
  return {
    policyFor(scope, request) {
      if (scope === 'org' && overrides.orgPolicy && request.access) {
        const policy = overrides.orgPolicy(request.access.orgId);
        return policy instanceof Promise ? policy.then((p) => p ?? fixed.org) : (policy ?? fixed.org);
      }
      return fixed[scope];
    },
  };
}

/** The partitions a request is counted in. Public routes: the client IP. Otherwise the principal and the org. */
function partitions(request: FastifyRequest): Array<{ scope: RateLimitScope; key: string }> {
  const p = request.principal;
  if (!p) return [{ scope: 'ip', key: `ip:${request.ip}` }];
  const who = p.apiKeyId ? `key:${p.apiKeyId}` : p.sessionId ? `session:${p.sessionId}` : `user:${p.userId}`;
  const out: Array<{ scope: RateLimitScope; key: string }> = [{ scope: 'principal', key: `principal:${who}` }];
  const orgId = request.access?.orgId ?? p.apiKeyOrgId;
  if (orgId) out.push({ scope: 'org', key: `org:${orgId}` });
  return out;
}

// RFC 8941 structured-field items, per draft-ietf-httpapi-ratelimit-headers (08+):
//   RateLimit-Policy: "org";q=6000;w=60, "principal";q=1200;w=60
//   RateLimit: "principal";r=1187;t=1
function policyItem(scope: RateLimitScope, policy: RateLimitPolicy): string {
  return `"${scope}";q=${policy.quota};w=${policy.windowSec}`;
}
function limitItem(scope: RateLimitScope, d: RateLimitDecision): string {
  return `"${scope}";r=${d.remaining};t=${d.resetSec}`;
}

/**
 * Rate limiting for every /v1 route, registered once, after authorization (a 401/403/404 from the auth
 * hook never reaches it, so failed credentials do not consume anyone's quota). Every partition is
 * consumed; the response advertises all policies and the partition with the least remaining quota.
 * All of a request's buckets — principal, org, client IP, and the auth-failure budget when authorization
 * was answered from memory — are evaluated in ONE store call (with Redis: one script, one round trip).
 */
export function registerRateLimit(app: App, opts: { store: RateLimitStore; resolver: RateLimitResolver }): void {
  app.addHook('preHandler', async (request: FastifyRequest, reply: FastifyReply) => {
    if (!request.routeOptions.url?.startsWith('/v1')) return;
    const parts = partitions(request);
    const policies = await Promise.all(parts.map(({ scope }) => opts.resolver.policyFor(scope, request)));
    const gate = uncheckedAuthFailureGate(request);
    const checks: RateLimitCheck[] = parts.map(({ key }, i) => ({ key, policy: policies[i]!, mode: 'consume' }));
    if (gate) checks.push(gate.check);
    const decisions = await opts.store.check(checks);
    // A spent auth-failure budget answers 429 first; the script consumed nothing then.
    if (gate) gate.settle(decisions[checks.length - 1]!);
    const results = parts.map(({ scope }, i) => ({ scope, policy: policies[i]!, decision: decisions[i]! }));
    reply.header('ratelimit-policy', results.map((r) => policyItem(r.scope, r.policy)).join(', '));
    const denied = results.filter((r) => !r.decision.allowed);
    const tightest = (denied.length > 0 ? denied : results).reduce((a, b) =>
      b.decision.remaining < a.decision.remaining || b.decision.retryAfterSec > a.decision.retryAfterSec ? b : a,
    );
    reply.header('ratelimit', limitItem(tightest.scope, tightest.decision));
    if (denied.length > 0) {
      rateLimitRejections.inc({ scope: tightest.scope });
      const retryAfter = Math.max(...denied.map((r) => r.decision.retryAfterSec));
      throw new AppError(
        'RATE_LIMIT.EXCEEDED',
        429,
        `Rate limit exceeded for ${tightest.scope} (${tightest.policy.quota} requests per ${tightest.policy.windowSec} s); retry after ${retryAfter} s`,
        { limit: tightest.scope },
        { 'retry-after': String(retryAfter) },
      );
    }
  });
}
