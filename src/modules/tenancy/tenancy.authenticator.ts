import type { FastifyRequest } from 'fastify';
import type { Authenticator } from '../../platform/http/auth.ts';
import { isUuid } from '../../platform/ids.ts';
import { SESSION_PREFIX, type Identity } from '../identity/index.ts';
import type { MembershipCache } from './tenancy.membership-cache.ts';
import { permissionsOf } from './tenancy.roles.ts';
import { API_KEY_PREFIX, type ApiKeys } from './use-cases/issue-api-keys.ts';

function bearerToken(request: FastifyRequest): string | null {
  const header = request.headers.authorization;
  if (typeof header !== 'string') return null;
  const match = /^Bearer ([A-Za-z0-9_-]{1,200})$/i.exec(header.trim());
  return match ? match[1]! : null;
}

/**
 * Tenancy's Authenticator, the one the kernel's authorization hook uses: sessions (`pls_…`, checked by
 * identity) and API keys (`plk_…`, tenancy's) → principal; membership → role → permissions. Sessions and
 * members' roles come from per-process caches invalidated on every instance when they change (bound:
 * CACHE_L1_TTL_MS if an invalidation is lost); API keys and their creator's role are read on every request.
 */
export function createAuthenticator(deps: {
  identity: Pick<Identity, 'authenticateSession'>;
  roleOf: (orgId: string, userId: string) => Promise<string | null>;
  memberships: MembershipCache;
  apiKeys: Pick<ApiKeys, 'authenticate' | 'scopesAndRole'>;
}): Authenticator {
  return {
    async authenticate(request, opts = {}) {
      const token = bearerToken(request);
      if (!token) return null;
      if (token.startsWith(SESSION_PREFIX)) return deps.identity.authenticateSession(token, opts);
      if (token.startsWith(API_KEY_PREFIX)) {
        await opts.beforeLookup?.();
        return deps.apiKeys.authenticate(token);
      }
      return null;
    },
    async resolveAccess(principal, orgId, opts = {}) {
      if (!isUuid(orgId)) return null;
      if (principal.kind === 'api_key') {
        if (principal.apiKeyOrgId !== orgId || !principal.apiKeyId) return null;
        await opts.beforeLookup?.();
        const found = await deps.apiKeys.scopesAndRole(orgId, principal.apiKeyId, principal.userId);
        if (!found) return null;
        const rolePermissions = permissionsOf(found.role);
        return { orgId, role: found.role, permissions: new Set(found.scopes.filter((s) => rolePermissions.has(s))) };
      }
      const role = await deps.memberships.role(orgId, principal.userId, () => deps.roleOf(orgId, principal.userId), opts.beforeLookup);
      return role ? { orgId, role, permissions: permissionsOf(role) } : null;
    },
  };
}
