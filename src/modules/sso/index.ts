import { resolveTxt as dnsResolveTxt } from 'node:dns/promises';
import { createSecretBox } from '../../platform/crypto/secret-box.ts';
import type { Database } from '../../platform/db/database.ts';
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
}

/** Per-org SSO (OIDC and SAML), verified domains and SSO enforcement. */
export interface Sso extends ModuleSurface {
  /** 403 AUTH.SSO_REQUIRED when the e-mail's domain is verified and enforced by an org. */
  assertPasswordAllowed(email: string): Promise<void>;
}

export function createSso(deps: SsoDeps): Sso {
  const service = createSsoService({
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
    assertPasswordAllowed: service.domains.assertPasswordAllowed,
    routes: [{ name: 'sso', prefix: '/v1', plugin: asPlugin(ssoRoutes(service)) }],
    registerJobs: registerSsoJobs,
  };
}
