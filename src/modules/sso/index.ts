import { resolveTxt as dnsResolveTxt } from 'node:dns/promises';
import { createSecretBox } from '../../platform/crypto/secret-box.ts';
import type { Logger } from 'pino';
import type { CacheProvider } from '../../platform/cache/cache.ts';
import type { Database } from '../../platform/db/database.ts';
import type { Authenticator } from '../../platform/http/auth.ts';
import type { Redis } from '../../platform/redis.ts';
import type { ResiliencePolicy } from '../../platform/resilience/policy.ts';
import { createPolicyAuthenticator } from './sso.policy.ts';
import type { CachedPolicy } from './use-cases/manage-policy.ts';
import { asPlugin } from '../../platform/http/module-routes.ts';
import type { ModuleSurface } from '../../platform/module.ts';
import type { Audit } from '../audit/index.ts';
import type { Identity } from '../identity/index.ts';
import type { Tenancy } from '../tenancy/index.ts';
import { registerSsoJobs } from './sso.jobs.ts';
import { createSsoRepo } from './sso.repo.ts';
import { ssoRoutes } from './sso.routes.ts';
import { createSsoService } from './sso.service.ts';
import type { SsoSettings, TxtResolver } from './use-cases/deps.ts';

export type { SsoSettings, TxtResolver } from './use-cases/deps.ts';
export { TXT_PREFIX } from './use-cases/verify-domains.ts';

export interface SsoDeps {
  db: Database;
  audit: Audit;
  identity: Identity;
  tenancy: Tenancy;
  /** Master key the OIDC client secrets are encrypted under (a purpose-specific key is derived from it). */
  secretKey: Buffer;
  settings: SsoSettings;
  /** DNS TXT lookups for domain verification (default: node:dns). */
  resolveTxt?: TxtResolver;
  /** Org policies are read per request through the cache; idle tracking uses Redis when there is one. */
  cache: CacheProvider;
  redis: Redis | undefined;
  redisPolicy: ResiliencePolicy;
  redisPrefix: string;
  logger: Logger;
}

/** Per-org SSO (OIDC and SAML), verified domains and SSO enforcement. */
export interface Sso extends ModuleSurface {
  /** Tenancy's Authenticator with each org's security policy applied (IP allow-list, MFA required, session lifetime, idle timeout). */
  readonly authenticator: Authenticator;
  /** 403 AUTH.SSO_REQUIRED when the e-mail's domain is verified and enforced by an org. */
  assertPasswordAllowed(email: string): Promise<void>;
}

export function createSso(deps: SsoDeps): Sso {
  const policyCache = deps.cache.namespace<CachedPolicy>('org-security-policy', { ttlSec: 300 });
  const service = createSsoService({
    policyCache,
    repo: createSsoRepo(deps.db),
    audit: deps.audit,
    identity: deps.identity,
    tenancy: deps.tenancy,
    secrets: createSecretBox(deps.secretKey, 'sso-client-secret'),
    resolveTxt: deps.resolveTxt ?? dnsResolveTxt,
    settings: deps.settings,
  });
  // Password logins (and password sessions) of enforced domains are refused by identity, through this guard.
  deps.identity.onPasswordUse(service.domains.assertPasswordAllowed);
  return {
    name: 'sso',
    authenticator: createPolicyAuthenticator({
      base: deps.tenancy.authenticator,
      policies: service.policy,
      mfaEnabled: deps.identity.mfaEnabled,
      assertRecentMfa: deps.identity.assertRecentMfa,
      stepUpMaxAgeSec: deps.settings.stepUpMaxAgeSec,
      redis: deps.redis,
      redisPolicy: deps.redisPolicy,
      redisPrefix: deps.redisPrefix,
      logger: deps.logger,
    }),
    assertPasswordAllowed: service.domains.assertPasswordAllowed,
    routes: [{ name: 'sso', prefix: '/v1', plugin: asPlugin(ssoRoutes(service)) }],
    registerJobs: registerSsoJobs,
  };
}
