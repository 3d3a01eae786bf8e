import { asPlugin, type ModuleRoutes } from '../../app.ts';
import type { Database } from '../../platform/db/database.ts';
import type { Authenticator } from '../../platform/http/auth.ts';
import type { Audit } from '../audit/index.ts';
import type { Identity } from '../identity/index.ts';
import { accessRoutes } from './tenancy.access.routes.ts';
import { createApiKeys } from './tenancy.api-keys.ts';
import { createAuthenticator } from './tenancy.authenticator.ts';
import { createInvitations } from './tenancy.invitations.ts';
import { revokeKeysOnDisable } from './tenancy.key-revocation.ts';
import { tenancyRoutes } from './tenancy.routes.ts';
import type { TenancyOutbox } from './tenancy.invitations.ts';
import { createTenancyService, type TenancyService } from './tenancy.service.ts';

export { ALL_PERMISSIONS, PERMISSIONS, permissionsOf, ROLE_PERMISSIONS, ROLES, type Permission, type Role } from './tenancy.roles.ts';
export { API_KEY_PREFIX } from './tenancy.api-keys.ts';
export { INVITATION_CREATED, INVITATION_PREFIX, type TenancyOutbox } from './tenancy.invitations.ts';
export type { Organization, Member } from './tenancy.service.ts';

export interface Tenancy {
  service: TenancyService;
  /** The Authenticator the kernel's authorization hook uses (sessions + API keys → org access). */
  authenticator: Authenticator;
  routes: ModuleRoutes[];
}

/** Organizations (the tenants), memberships and roles, invitations, API keys. */
export function createTenancy(deps: { db: Database; audit: Audit; identity: Identity; outbox?: TenancyOutbox }): Tenancy {
  const service = createTenancyService(deps);
  const invitations = createInvitations(deps);
  const apiKeys = createApiKeys(deps);
  deps.identity.onDisabled(revokeKeysOnDisable(deps.audit));
  return {
    service,
    authenticator: createAuthenticator({ identity: deps.identity, tenancy: service, apiKeys }),
    routes: [
      { name: 'tenancy', prefix: '/v1', plugin: asPlugin(tenancyRoutes({ tenancy: service, identity: deps.identity })) },
      { name: 'tenancy-access', prefix: '/v1', plugin: asPlugin(accessRoutes({ invitations, apiKeys, assertMayGrant: service.assertMayGrant })) },
    ],
  };
}
