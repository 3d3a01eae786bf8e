import { isUniqueViolation } from '../../../platform/db/constraint-errors.ts';
import type { ActorContext } from '../../../platform/http/actor.ts';
import { AppError } from '../../../platform/http/errors.ts';
import { decodeCursor, listFingerprint, toPage } from '../../../platform/http/pagination.ts';
import { isUuid, newId } from '../../../platform/ids.ts';
import { normalizeEmail, sha256Hex } from '../../identity/index.ts';
import { invitationNotFound } from '../tenancy.errors.ts';
import { INVITATION_CREATED, MEMBER_JOINED, type InvitationCreatedPayload, type MemberJoinedPayload } from '../tenancy.events.ts';
import type { InvitationRow, Membership } from '../tenancy.repo.ts';
import type { Role } from '../tenancy.roles.ts';
import { newOrgToken, orgOfToken } from '../tenancy.tokens.ts';
import type { UseCaseDeps } from './deps.ts';

export const INVITATION_PREFIX = 'pli_';

export type InvitationStatus = 'pending' | 'accepted' | 'revoked' | 'expired';

export interface Invitation {
  id: string;
  email: string;
  role: string;
  status: InvitationStatus;
  expiresAt: Date;
  createdAt: Date;
}

const toInvitation = (r: InvitationRow): Invitation => ({
  id: r.id,
  email: r.email,
  role: r.role,
  expiresAt: r.expiresAt,
  createdAt: r.createdAt,
  status: r.acceptedAt ? 'accepted' : r.revokedAt ? 'revoked' : r.expiresAt <= new Date() ? 'expired' : 'pending',
});

export function inviteMembers(deps: UseCaseDeps) {
  const { repo, audit, identity, events } = deps;

  return {
    /** The invitation and its token (shown only here); tenancy.invitation_created commits with it. */
    async create(orgId: string, input: { email: string; role: Role; expiresInHours: number }, invitedBy: string, ctx: ActorContext): Promise<Invitation & { token: string }> {
      const token = newOrgToken(INVITATION_PREFIX, orgId);
      const id = newId();
      const row = await repo.withTenant(orgId, async (trx) => {
        const row = await repo.insertInvitation(trx, {
          orgId,
          id,
          email: normalizeEmail(input.email),
          role: input.role,
          tokenHash: sha256Hex(token),
          invitedBy,
          expiresAt: new Date(Date.now() + input.expiresInHours * 3_600_000),
        });
        await audit.record(trx, { orgId, action: 'invitation.created', target: { type: 'invitation', id }, changes: { role: { to: input.role } }, personal: [{ subject: { email: row.email }, data: { email: { to: row.email } } }], context: ctx });
        await events.add<InvitationCreatedPayload>(trx, {
          name: INVITATION_CREATED,
          tenantId: orgId,
          payload: { invitationId: id, email: row.email, role: input.role, token, expiresAt: row.expiresAt.toISOString(), invitedBy },
        });
        return row;
      });
      return { ...toInvitation(row), token };
    },

    async list(orgId: string, q: { cursor?: string; limit: number }): Promise<{ data: Invitation[]; nextCursor: string | null }> {
      const fingerprint = listFingerprint({ list: 'invitations' });
      const afterId = q.cursor ? (decodeCursor(q.cursor, fingerprint, ([, k]) => typeof k === 'string' && isUuid(k))[1] as string) : undefined;
      const rows = await repo.listInvitations(orgId, { afterId, limit: q.limit + 1 });
      const page = toPage(rows, q.limit, fingerprint, (r) => [null, r.id]);
      return { data: page.data.map(toInvitation), nextCursor: page.nextCursor };
    },

    async revoke(orgId: string, invitationId: string, ctx: ActorContext): Promise<void> {
      await repo.withTenant(orgId, async (trx) => {
        if (!(await repo.revokeInvitation(trx, invitationId))) throw invitationNotFound();
        await audit.record(trx, { orgId, action: 'invitation.revoked', target: { type: 'invitation', id: invitationId }, context: ctx });
      });
    },

    /** The signed-in user joins with the invited role; the invitation is bound to its email address. */
    async accept(token: string, userId: string, ctx: ActorContext): Promise<Membership> {
      const orgId = orgOfToken(INVITATION_PREFIX, token);
      if (!orgId) throw invitationNotFound();
      const user = await identity.getUser(userId);
      const withinPlan = await deps.memberLimit(orgId);
      return repo.withTenant(orgId, async (trx) => {
        const inv = await repo.lockInvitationByTokenHash(trx, sha256Hex(token));
        if (!inv || inv.revokedAt) throw invitationNotFound();
        if (inv.acceptedAt) throw new AppError('TENANCY.INVITATION_USED', 409, 'This invitation has already been used');
        if (inv.expiresAt <= new Date()) throw new AppError('TENANCY.INVITATION_EXPIRED', 410, 'This invitation has expired');
        if (inv.email !== user.email) {
          throw new AppError('TENANCY.INVITATION_EMAIL_MISMATCH', 403, 'This invitation was sent to a different email address');
        }
        const alreadyMember = () => new AppError('TENANCY.ALREADY_MEMBER', 409, 'You are already a member of this organization');
        if (await repo.membership(trx, userId)) throw alreadyMember();
        withinPlan(await repo.countMembersLocked(trx, orgId));
        // Two invitations accepted at once both pass the check above; unique (tenant_id, user_id) decides.
        await repo.insertMembership(trx, { orgId, id: newId(), userId, role: inv.role }).catch((err: unknown) => {
          throw isUniqueViolation(err) ? alreadyMember() : err;
        });
        await repo.markInvitationAccepted(trx, inv.id, userId);
        await audit.record(trx, { orgId, action: 'invitation.accepted', target: { type: 'invitation', id: inv.id }, context: ctx });
        await audit.record(trx, { orgId, action: 'member.added', target: { type: 'user', id: userId }, changes: { role: { to: inv.role } }, context: ctx });
        await events.add<MemberJoinedPayload>(trx, { name: MEMBER_JOINED, tenantId: orgId, payload: { userId, role: inv.role, via: 'invitation', actorId: userId } });
        const org = await repo.orgById(trx, orgId);
        if (!org) throw new Error(`organization ${orgId} has an invitation but no row`);
        return { orgId, orgName: org.name, role: inv.role, joinedAt: new Date() };
      });
    },
  };
}
