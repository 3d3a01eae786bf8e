import { asPlugin, type ModuleRoutes } from '../../platform/http/module-routes.ts';
import { identityRoutes } from './identity.routes.ts';
import { createIdentityService, type IdentityDeps, type IdentityService } from './identity.service.ts';

export { Email, Password, PersonName, SessionTokenSchema, UserSchema, userJson } from './identity.schemas.ts';
export { requestMeta, userPrincipal } from './identity.routes.ts';
export { normalizeEmail, type User } from './identity.service.ts';
export { SESSION_PREFIX } from './identity.sessions.ts';
export { sha256Hex, newSecret } from './identity.tokens.ts';
export type { IdentityService };

export interface Identity extends IdentityService {
  routes: ModuleRoutes;
}

/** Accounts, passwords, sessions and login throttling. Orgs and RBAC live in tenancy. */
export function createIdentity(deps: IdentityDeps): Identity {
  const service = createIdentityService(deps);
  return { ...service, routes: { name: 'identity', prefix: '/v1', plugin: asPlugin(identityRoutes(service)) } };
}
export { runAdminCommand } from './identity.cli.ts';
