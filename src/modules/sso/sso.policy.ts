import type { BlockList } from 'node:net';
import { LRUCache } from 'lru-cache';
import type { Logger } from 'pino';
import type { FastifyRequest } from 'fastify';
import type { Authenticator, Principal } from '../../platform/http/auth.ts';
import { AppError } from '../../platform/http/errors.ts';
import type { Redis } from '../../platform/redis.ts';
import type { ResiliencePolicy } from '../../platform/resilience/policy.ts';
import { ipAllowed, parseAllowList, type ManagePolicy } from './use-cases/manage-policy.ts';
import { growingLru } from '../../platform/cache/lru.ts';

const ipNotAllowed = () => new AppError('AUTH.IP_NOT_ALLOWED', 403, "This organization does not accept requests from your network address");
const mfaRequired = () =>
  new AppError('AUTH.MFA_REQUIRED', 403, 'This organization requires two-factor authentication: enroll at POST /v1/me/mfa/totp or register a passkey (POST /v1/me/mfa/webauthn/registration-options)');
const reauthenticate = (why: string) => new AppError('AUTH.REAUTHENTICATION_REQUIRED', 401, `Sign in again: ${why}`, {}, { 'www-authenticate': 'Bearer' });

/**
 * Sensitive actions: a session whose user has MFA must have proved it within `stepUpMaxAgeSec`
 * (403 AUTH.STEP_UP_REQUIRED; POST /v1/me/mfa/step-up). Every write that needs `sso:manage` (SSO
 * connections, domains, the security policy) is one too.
 */
export const STEP_UP_ROUTES: ReadonlySet<string> = new Set([
  'POST /v1/orgs/:orgId/api-keys',
  'PATCH /v1/orgs/:orgId/members/:userId',
]);
const SSO_MANAGE = 'sso:manage';

function isSensitive(request: FastifyRequest): boolean {
  const route = `${request.method} ${request.routeOptions.url ?? ''}`;
  return STEP_UP_ROUTES.has(route) || (request.method !== 'GET' && request.routeOptions.config?.permission === SSO_MANAGE);
}

/** A UUIDv7's first 48 bits are its creation time in ms: a session's age, without reading the session. */
export function uuidv7Time(id: string): number {
  return parseInt(id.replaceAll('-', '').slice(0, 12), 16);
}

export interface PolicyAuthenticatorDeps {
  base: Authenticator;
  policies: Pick<ManagePolicy, 'cached'>;
  mfaEnabled: (userId: string) => Promise<boolean>;
  assertRecentMfa: (principal: Principal, maxAgeSec: number) => Promise<void>;
  stepUpMaxAgeSec: number;
  redis: Redis | undefined;
  redisPolicy: ResiliencePolicy;
  redisPrefix: string;
  logger: Logger;
}

/**
 * Wraps tenancy's Authenticator with each org's security policy, on every org request, with no database
 * round trip on the hot path: the policy and "has MFA" come from the cache, the session's age from its
 * UUIDv7 id, its last activity in this org from Redis (one SET … GET) or, embedded, process memory.
 *  - IP allow-list (sessions and API keys): 403 AUTH.IP_NOT_ALLOWED.
 *  - MFA required (sessions): 403 AUTH.MFA_REQUIRED until the user enrolls.
 *  - Session max lifetime and idle timeout (sessions): 401 AUTH.REAUTHENTICATION_REQUIRED.
 *  - Step-up for sensitive actions (STEP_UP_ROUTES, sso:manage writes): 403 AUTH.STEP_UP_REQUIRED.
 */
export function createPolicyAuthenticator(deps: PolicyAuthenticatorDeps): Authenticator {
  const { base, redis } = deps;
  // What resolveAccess needs from the request (the Authenticator interface passes only the principal).
  const requestOf = new WeakMap<Principal, { ip: string; sensitive: boolean }>();
  const compiled = new LRUCache<string, BlockList>({ max: 1000 });
  const localActivity = growingLru<string, number>({ entries: 100_000, ttl: 30 * 86_400_000 });

  function allowList(cidrs: string[]): BlockList {
    const k = cidrs.join(',');
    let list = compiled.get(k);
    if (!list) compiled.set(k, (list = parseAllowList(cidrs)));
    return list;
  }

  /** Records this request as the session's latest activity in the org; returns the previous one (ms) or null. */
  async function touch(orgId: string, sessionId: string, idleSec: number): Promise<number | null> {
    const key = `${orgId}:${sessionId}`;
    const now = Date.now();
    if (redis) {
      try {
        const prev = (await deps.redisPolicy.execute(() => redis.call('SET', `${deps.redisPrefix}sso:active:${key}`, String(now), 'EX', String(idleSec), 'GET'))) as string | null;
        return prev === null ? null : Number(prev);
      } catch (err) {
        deps.logger.warn({ err: (err as Error).message }, 'idle timeout: Redis unavailable, using this process’s memory');
      }
    }
    const prev = localActivity.get(key) ?? null;
    localActivity.set(key, now, { ttl: idleSec * 1000 });
    return prev;
  }

  /** An idle session stays expired in this org (the next request must not count as fresh activity). */
  async function forgetActivity(orgId: string, sessionId: string): Promise<void> {
    const key = `${orgId}:${sessionId}`;
    localActivity.delete(key);
    if (redis) await deps.redisPolicy.execute(() => redis.del(`${deps.redisPrefix}sso:active:${key}`)).catch(() => 0);
  }

  return {
    async authenticate(request, lookup) {
      const principal = await base.authenticate(request, lookup);
      if (principal) requestOf.set(principal, { ip: request.ip, sensitive: isSensitive(request) });
      return principal;
    },

    async resolveAccess(principal, orgId, lookup) {
      // The lookup options carry the auth-failure budget check the caches run before a database lookup.
      const access = await base.resolveAccess(principal, orgId, lookup);
      if (!access) return null;
      const policy = await deps.policies.cached(orgId);
      const req = requestOf.get(principal);
      if (policy.ipAllowList.length > 0 && !ipAllowed(allowList(policy.ipAllowList), req?.ip)) throw ipNotAllowed();
      if (principal.kind !== 'user' || !principal.sessionId) return access;
      if (req?.sensitive) await deps.assertRecentMfa(principal, deps.stepUpMaxAgeSec);
      if (policy.mfaRequired && !(await deps.mfaEnabled(principal.userId))) throw mfaRequired();
      const createdAt = uuidv7Time(principal.sessionId);
      if (policy.sessionMaxAgeSec && Date.now() - createdAt > policy.sessionMaxAgeSec * 1000) throw reauthenticate('this session is older than the organization allows');
      if (policy.idleTimeoutSec) {
        const prev = await touch(orgId, principal.sessionId, policy.idleTimeoutSec);
        // No recorded activity: idle since the session began or the policy was set, whichever is later.
        const lastActive = prev ?? Math.max(createdAt, policy.idleSinceMs ?? 0);
        if (Date.now() - lastActive > policy.idleTimeoutSec * 1000) {
          await forgetActivity(orgId, principal.sessionId);
          throw reauthenticate('this session was idle longer than the organization allows');
        }
      }
      return access;
    },
  };
}
