import type { TxHandle } from '../../../platform/db/database.ts';
import type { ActorContext } from '../../../platform/http/actor.ts';
import { newId } from '../../../platform/ids.ts';
import type { UseCaseDeps } from './deps.ts';

/**
 * Just-in-time membership for a sign-in through the org's IdP (sso), in the caller's transaction (which
 * runs in the org's tenant context): adds the user with `role` when they are not a member; with
 * `syncRole` (the role came from the IdP's group mapping) moves an existing member to it, except owners,
 * whom an IdP never demotes.
 */
export function provisionMember(deps: UseCaseDeps) {
  const { repo, audit } = deps;
  return async (handle: TxHandle, orgId: string, userId: string, role: string, opts: { syncRole: boolean }, ctx: ActorContext): Promise<{ role: string; created: boolean }> => {
    const trx = repo.join(handle);
    const current = await repo.lockMemberRole(trx, userId);
    if (!current) {
      await repo.insertMembership(trx, { orgId, id: newId(), userId, role });
      await audit.record(trx, { orgId, action: 'member.added', target: { type: 'user', id: userId }, changes: { role: { to: role }, via: 'sso' }, context: ctx });
      return { role, created: true };
    }
    if (opts.syncRole && current !== role && current !== 'owner') {
      await repo.setRole(trx, userId, role);
      await audit.record(trx, { orgId, action: 'member.role_changed', target: { type: 'user', id: userId }, changes: { role: { from: current, to: role }, via: 'sso' }, context: ctx });
      return { role, created: false };
    }
    return { role: current, created: false };
  };
}
