import type { TenantCache } from '../../platform/cache/cache.ts';
import type { SsoUseCaseDeps } from './use-cases/deps.ts';
import { managePolicy, type CachedPolicy } from './use-cases/manage-policy.ts';
import { completeLogin } from './use-cases/complete-login.ts';
import { manageConnections } from './use-cases/manage-connections.ts';
import { oidcLogin } from './use-cases/oidc-login.ts';
import { samlLogin } from './use-cases/saml-login.ts';
import { verifyDomains } from './use-cases/verify-domains.ts';

/** The sso use cases, one file each under use-cases/. */
export function createSsoService(deps: SsoUseCaseDeps & { policyCache: TenantCache<CachedPolicy> }) {
  const complete = completeLogin(deps);
  return {
    policy: managePolicy({ ...deps, mfaEnabled: deps.identity.mfaEnabled }),
    connections: manageConnections(deps),
    oidc: oidcLogin(deps, complete),
    saml: samlLogin(deps, complete),
    domains: verifyDomains(deps),
  };
}

export type SsoService = ReturnType<typeof createSsoService>;
