import type { ActorContext } from '../../../platform/http/actor.ts';
import { AppError } from '../../../platform/http/errors.ts';
import { decodeCursor, listFingerprint, toPage } from '../../../platform/http/pagination.ts';
import { isUuid } from '../../../platform/ids.ts';
import type { User } from '../../identity/index.ts';
import { lastOwner, memberNotFound, roleNotAllowed } from '../tenancy.errors.ts';
import { MEMBER_REMOVED, MEMBER_ROLE_CHANGED, type MemberRemovedPayload, type MemberRoleChangedPayload } from '../tenancy.events.ts';
import type { MembershipRow, TenancyTx } from '../tenancy.repo.ts';
import { isSubset, permissionsOf, type Role } from '../tenancy.roles.ts';
import type { UseCaseDeps } from './deps.ts';

export interface Member {
  userId: string;
  email: string;
  name: string;
  role: string;
  joinedAt: Date;
}

const toMember = (m: MembershipRow, user: User | undefined): Member => ({
  userId: m.userId,
  email: user?.email ?? '',
  name: user?.name ?? '',
  role: m.role,
  joinedAt: m.createdAt,
});

/** A caller may hand out a role (or change someone's) only within the permissions they hold. */
export function assertMayGrant(role: string, held: ReadonlySet<string>): void {
  if (!isSubset(permissionsOf(role), held)) throw roleNotAllowed(role);
}

export function manageMembers(deps: UseCaseDeps) {
  const { repo, audit, identity, memberships, events } = deps;

  /** Locks the org's owner rows so two concurrent demotions cannot both pass the last-owner check. */
  async function assertNotLastOwner(trx: TenancyTx, orgId: string, userId: string): Promise<void> {
    const owners = await repo.lockOwners(trx, orgId);
    if (owners.length <= 1 && owners.includes(userId)) throw lastOwner();
  }

  async function getMember(orgId: string, userId: string): Promise<Member> {
    const row = await repo.withTenant(orgId, (trx) => repo.membership(trx, userId));
    if (!row) throw memberNotFound();
    return toMember(row, (await identity.getUsers([userId])).get(userId));
  }

  return {
    getMember,

    /** The caller's role in the org, or null (not a member / no such org). */
    async roleOf(orgId: string, userId: string): Promise<string | null> {
      const row = await repo.withTenant(orgId, (trx) => repo.membership(trx, userId));
      return row?.role ?? null;
    },

    async listMembers(orgId: string, q: { cursor?: string; limit: number; role?: string }): Promise<{ data: Member[]; nextCursor: string | null }> {
      const fingerprint = listFingerprint({ list: 'members', role: q.role });
      const afterId = q.cursor ? (decodeCursor(q.cursor, fingerprint, ([, k]) => typeof k === 'string' && isUuid(k))[1] as string) : undefined;
      const rows = await repo.listMembers(orgId, { afterId, role: q.role, limit: q.limit + 1 });
      const page = toPage(rows, q.limit, fingerprint, (r) => [null, r.id]);
      const users = await identity.getUsers(page.data.map((r) => r.userId));
      return { data: page.data.map((r) => toMember(r, users.get(r.userId))), nextCursor: page.nextCursor };
    },

    async changeRole(orgId: string, userId: string, role: Role, held: ReadonlySet<string>, ctx: ActorContext): Promise<Member> {
      assertMayGrant(role, held);
      await repo.withTenant(orgId, async (trx) => {
        const current = await repo.lockMemberRole(trx, userId);
        if (!current) throw memberNotFound();
        if (current === role) return;
        assertMayGrant(current, held);
        if (current === 'owner') await assertNotLastOwner(trx, orgId, userId);
        await repo.setRole(trx, userId, role);
        await audit.record(trx, { orgId, action: 'member.role_changed', target: { type: 'user', id: userId }, changes: { role: { from: current, to: role } }, context: ctx });
        await events.add<MemberRoleChangedPayload>(trx, { name: MEMBER_ROLE_CHANGED, tenantId: orgId, payload: { userId, from: current, to: role, via: 'member', actorId: ctx.actor.userId ?? null } });
      });
      // After commit, on every instance (an invalidation published before commit could be undone by a reload).
      await memberships.invalidate(orgId, userId);
      return getMember(orgId, userId);
    },

    /** Leaving (self) needs only membership; removing someone else needs members:manage. */
    async removeMember(orgId: string, userId: string, actorUserId: string, held: ReadonlySet<string>, ctx: ActorContext): Promise<void> {
      const self = userId === actorUserId && ctx.actor.type === 'user';
      if (!self && !held.has('members:manage')) {
        throw new AppError('AUTH.FORBIDDEN', 403, 'This action needs the permission members:manage', { permission: 'members:manage' });
      }
      await repo.withTenant(orgId, async (trx) => {
        const current = await repo.lockMemberRole(trx, userId);
        if (!current) throw memberNotFound();
        if (!self) assertMayGrant(current, held);
        if (current === 'owner') await assertNotLastOwner(trx, orgId, userId);
        await repo.deleteMembership(trx, userId);
        // API keys act for their creator: a member who leaves takes their keys with them, for good.
        const apiKeysRevoked = await repo.revokeKeysCreatedBy(trx, userId);
        await audit.record(trx, { orgId, action: self ? 'member.left' : 'member.removed', target: { type: 'user', id: userId }, changes: { role: { from: current }, ...(apiKeysRevoked > 0 ? { apiKeysRevoked } : {}) }, context: ctx });
        await events.add<MemberRemovedPayload>(trx, { name: MEMBER_REMOVED, tenantId: orgId, payload: { userId, role: current, via: self ? 'left' : 'removed', actorId: ctx.actor.userId ?? null } });
      });
      await memberships.invalidate(orgId, userId);
    },
  };
}
