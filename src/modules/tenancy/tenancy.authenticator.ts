import type { FastifyRequest } from 'fastify';
import type { Authenticator } from '../../platform/http/auth.ts';
import { isUuid } from '../../platform/ids.ts';
import { SESSION_PREFIX, type Identity } from '../identity/index.ts';
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
 * identity) and API keys (`plk_…`, tenancy's) → principal; membership → role → permissions, read on
 * every request (no cache), so role changes and removals apply to the very next request.
 */
export function createAuthenticator(deps: {
  identity: Pick<Identity, 'authenticateSession'>;
  roleOf: (orgId: string, userId: string) => Promise<string | null>;
  apiKeys: Pick<ApiKeys, 'authenticate' | 'scopesAndRole'>;
}): Authenticator {
  return {
    async authenticate(request) {
      const token = bearerToken(request);
      if (!token) return null;
      if (token.startsWith(SESSION_PREFIX)) return deps.identity.authenticateSession(token);
      if (token.startsWith(API_KEY_PREFIX)) return deps.apiKeys.authenticate(token);
      return null;
    },
    async resolveAccess(principal, orgId) {
      if (!isUuid(orgId)) return null;
      if (principal.kind === 'api_key') {
        if (principal.apiKeyOrgId !== orgId || !principal.apiKeyId) return null;
        const found = await deps.apiKeys.scopesAndRole(orgId, principal.apiKeyId, principal.userId);
        if (!found) return null;
        const rolePermissions = permissionsOf(found.role);
        return { orgId, role: found.role, permissions: new Set(found.scopes.filter((s) => rolePermissions.has(s))) };
      }
      const role = await deps.roleOf(orgId, principal.userId);
      return role ? { orgId, role, permissions: permissionsOf(role) } : null;
    },
  };
}
