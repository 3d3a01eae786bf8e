import type { ActorContext } from '../../../platform/http/actor.ts';
import { newId } from '../../../platform/ids.ts';
import type { NewSession, RequestMeta, User } from '../../identity/index.ts';
import { USER_SIGNED_UP, type UserSignedUpPayload } from '../tenancy.events.ts';
import type { Organization } from '../tenancy.repo.ts';
import type { UseCaseDeps } from './deps.ts';
import { insertOrgWithOwner } from './manage-organizations.ts';

export interface SignupInput {
  email: string;
  password: string;
  name: string;
  organizationName: string;
}

/**
 * Signup spans two modules in ONE transaction (the new org's tenant context): identity creates the user
 * and the first session through its facade, given this transaction (`identity.createUser(trx, …)`,
 * `identity.startSession(trx, …)`); tenancy adds the org and the owner membership. All of it, and its
 * audit events, commits or rolls back together.
 */
export function signUp(deps: UseCaseDeps) {
  const { repo, audit, identity, events } = deps;
  return async (input: SignupInput, meta: RequestMeta): Promise<{ user: User; organization: Organization; session: NewSession }> => {
    const passwordHash = await identity.preparePassword(input.password, { email: input.email, name: input.name });
    const orgId = newId();
    return repo.withTenant(orgId, async (trx) => {
      const user = await identity.createUser(trx, { email: input.email, name: input.name, passwordHash });
      const ctx: ActorContext = { actor: { type: 'user', id: user.id, userId: user.id }, requestId: meta.requestId, ip: meta.ip };
      await audit.record(trx, { orgId, action: 'user.signed_up', target: { type: 'user', id: user.id }, personal: [{ subject: { userId: user.id }, data: { email: { to: user.email } } }], context: ctx });
      await events.add<UserSignedUpPayload>(trx, { name: USER_SIGNED_UP, tenantId: orgId, payload: { userId: user.id } });
      const organization = await insertOrgWithOwner(deps, trx, orgId, input.organizationName, user.id, ctx, true);
      const session = await identity.startSession(trx, user.id, meta);
      return { user, organization, session };
    });
  };
}
