import type { TxHandle } from '../../../platform/db/database.ts';
import type { ActorContext } from '../../../platform/http/actor.ts';
import { newId } from '../../../platform/ids.ts';
import { lastOwner } from '../tenancy.errors.ts';
import { MEMBER_JOINED, MEMBER_REMOVED, MEMBER_ROLE_CHANGED, type MemberJoinedPayload, type MemberRemovedPayload, type MemberRoleChangedPayload } from '../tenancy.events.ts';
import type { UseCaseDeps } from './deps.ts';

/**
 * Membership changes made by a directory (SCIM) or an IdP (SSO just-in-time) rather than by a member: they join the CALLER's
 * transaction (already in the org's tenant context), so the directory's own rows, the membership and
 * both audit events commit together. The caller runs `invalidateMember` after commit.
 * Owners are managed in Plinth only: a directory never changes an owner's role, and never removes the last owner.
 */
export function provisionMembers({ repo, audit, memberships, events }: Pick<UseCaseDeps, 'repo' | 'audit' | 'memberships' | 'events'>) {
  return {
    /**
     * Adds the user with `role` when they are not a member. With `syncRole` (a directory, or an IdP's group
     * mapping decided the role) an existing member is moved to it too — never an owner: owners are
     * managed in Plinth only. Audited as `member.provisioned` / `member.role_changed` with `via`.
     */
    async provisionMember(
      handle: TxHandle,
      orgId: string,
      userId: string,
      role: string,
      opts: { syncRole: boolean; via: 'sso' | 'directory' },
      ctx: ActorContext,
    ): Promise<{ role: string; outcome: 'added' | 'changed' | 'unchanged' }> {
      const trx = repo.join(handle);
      const current = await repo.lockMemberRole(trx, userId);
      if (current === null) {
        await repo.insertMembership(trx, { orgId, id: newId(), userId, role });
        await audit.record(trx, { orgId, action: 'member.provisioned', target: { type: 'user', id: userId }, changes: { role: { to: role }, via: opts.via }, context: ctx });
        await events.add<MemberJoinedPayload>(trx, { name: MEMBER_JOINED, tenantId: orgId, payload: { userId, role, via: opts.via, actorId: ctx.actor.userId ?? null } });
        return { role, outcome: 'added' };
      }
      if (!opts.syncRole || current === role || current === 'owner') return { role: current, outcome: 'unchanged' };
      await repo.setRole(trx, userId, role);
      await audit.record(trx, { orgId, action: 'member.role_changed', target: { type: 'user', id: userId }, changes: { role: { from: current, to: role }, via: opts.via }, context: ctx });
      await events.add<MemberRoleChangedPayload>(trx, { name: MEMBER_ROLE_CHANGED, tenantId: orgId, payload: { userId, from: current, to: role, via: opts.via, actorId: ctx.actor.userId ?? null } });
      return { role, outcome: 'changed' };
    },

    /** Removes the membership and revokes the member's API keys in the org; false when not a member. */
    async deprovisionMember(handle: TxHandle, orgId: string, userId: string, ctx: ActorContext): Promise<boolean> {
      const trx = repo.join(handle);
      const current = await repo.lockMemberRole(trx, userId);
      if (current === null) return false;
      if (current === 'owner') {
        const owners = await repo.lockOwners(trx, orgId);
        if (owners.length <= 1) throw lastOwner();
      }
      await repo.deleteMembership(trx, userId);
      const apiKeysRevoked = await repo.revokeKeysCreatedBy(trx, userId);
      await audit.record(trx, { orgId, action: 'member.deprovisioned', target: { type: 'user', id: userId }, changes: { role: { from: current }, apiKeysRevoked }, context: ctx });
      await events.add<MemberRemovedPayload>(trx, { name: MEMBER_REMOVED, tenantId: orgId, payload: { userId, role: current, via: 'directory', actorId: ctx.actor.userId ?? null } });
      return true;
    },

    /** After commit: every instance drops its cached role of the user in the org. */
    invalidateMember: (orgId: string, userId: string) => memberships.invalidate(orgId, userId),
  };
}
