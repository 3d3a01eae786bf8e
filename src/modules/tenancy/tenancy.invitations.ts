import { isUniqueViolation } from '../../platform/db/constraint-errors.ts';
import type { Database } from '../../platform/db/database.ts';
import { AppError } from '../../platform/http/errors.ts';
import { newId } from '../../platform/ids.ts';
import type { Audit, AuditContext } from '../audit/index.ts';
import { normalizeEmail, sha256Hex, type Identity } from '../identity/index.ts';
import { invitationNotFound } from './tenancy.errors.ts';
import { decodeCursor, page } from './tenancy.paging.ts';
import type { Role } from './tenancy.roles.ts';
import { newOrgToken, orgOfToken } from './tenancy.tokens.ts';

export const INVITATION_PREFIX = 'pli_';

const toInvitation = (r: Record<string, any>) => ({
  id: r.id as string,
  email: r.email as string,
  role: r.role as string,
  expiresAt: new Date(r.expires_at),
  createdAt: new Date(r.created_at),
  status: (r.accepted_at ? 'accepted' : r.revoked_at ? 'revoked' : new Date(r.expires_at) <= new Date() ? 'expired' : 'pending') as string,
});

/** The async backbone's `add` (platform.events): the event commits with the invitation. */
export interface TenancyOutbox {
  add(trx: any, event: { name: string; tenantId: string; payload: object }): Promise<unknown>;
}

/** Published in the invitation's transaction; notifications e-mails the accept link. The token is in the
 * payload because only its hash is stored: outbox rows are platform-internal and kept at most 7 days. */
export const INVITATION_CREATED = 'tenancy.invitation_created';

export function createInvitations(deps: { db: Database; audit: Audit; identity: Identity; outbox?: TenancyOutbox }) {
  const { db, audit, identity } = deps;
  const COLUMNS = ['id', 'email', 'role', 'expires_at', 'created_at', 'accepted_at', 'revoked_at'] as const;

  return {
    async create(orgId: string, input: { email: string; role: Role; expiresInHours: number }, invitedBy: string, ctx: AuditContext) {
      const token = newOrgToken(INVITATION_PREFIX, orgId);
      const id = newId();
      const row = await db.withTenant(orgId, async (trx) => {
        const row = await trx
          .insertInto('invitations')
          .values({
            tenant_id: orgId,
            id,
            email: normalizeEmail(input.email),
            role: input.role,
            token_hash: sha256Hex(token),
            invited_by: invitedBy,
            expires_at: new Date(Date.now() + input.expiresInHours * 3_600_000),
          })
          .returning(COLUMNS)
          .executeTakeFirstOrThrow();
        await audit.record(trx, { orgId, action: 'invitation.created', target: { type: 'invitation', id }, changes: { email: { to: row.email }, role: { to: input.role } }, context: ctx });
        await deps.outbox?.add(trx, {
          name: INVITATION_CREATED,
          tenantId: orgId,
          payload: { invitationId: id, email: row.email, role: input.role, token, expiresAt: new Date(row.expires_at).toISOString() },
        });
        return row;
      });
      return { ...toInvitation(row), token };
    },

    async list(orgId: string, q: { cursor?: string; limit?: number }) {
      const limit = Math.min(q.limit ?? 50, 100);
      const shape = { list: 'invitations' };
      const after = decodeCursor(q.cursor, shape);
      const rows = await db.withTenantRead(orgId, (trx) => {
        let query = trx.selectFrom('invitations').select(COLUMNS);
        if (after) query = query.where('id', '>', after);
        return query.orderBy('id').limit(limit + 1).execute();
      });
      return page(rows as Array<{ id: string }>, limit, shape, toInvitation);
    },

    async revoke(orgId: string, invitationId: string, ctx: AuditContext): Promise<void> {
      await db.withTenant(orgId, async (trx) => {
        const res = await trx.updateTable('invitations').set({ revoked_at: new Date() }).where('id', '=', invitationId).where('accepted_at', 'is', null).where('revoked_at', 'is', null).executeTakeFirst();
        if (Number(res.numUpdatedRows) === 0) throw invitationNotFound();
        await audit.record(trx, { orgId, action: 'invitation.revoked', target: { type: 'invitation', id: invitationId }, context: ctx });
      });
    },

    /** The signed-in user joins with the invited role; the invitation is bound to its email address. */
    async accept(token: string, userId: string, ctx: AuditContext) {
      const orgId = orgOfToken(INVITATION_PREFIX, token);
      if (!orgId) throw invitationNotFound();
      const user = await identity.getUser(userId);
      return db.withTenant(orgId, async (trx) => {
        const inv = await trx.selectFrom('invitations').selectAll().where('token_hash', '=', sha256Hex(token)).forUpdate().executeTakeFirst();
        if (!inv || inv.revoked_at) throw invitationNotFound();
        if (inv.accepted_at) throw new AppError('TENANCY.INVITATION_USED', 409, 'This invitation has already been used');
        if (new Date(inv.expires_at) <= new Date()) throw new AppError('TENANCY.INVITATION_EXPIRED', 410, 'This invitation has expired');
        if (inv.email !== user.email) {
          throw new AppError('TENANCY.INVITATION_EMAIL_MISMATCH', 403, 'This invitation was sent to a different email address');
        }
        const alreadyMember = () => new AppError('TENANCY.ALREADY_MEMBER', 409, 'You are already a member of this organization');
        const existing = await trx.selectFrom('memberships').select('id').where('user_id', '=', userId).executeTakeFirst();
        if (existing) throw alreadyMember();
        // Two invitations accepted at once both pass the check above; unique (tenant_id, user_id) decides.
        await trx
          .insertInto('memberships')
          .values({ tenant_id: orgId, id: newId(), user_id: userId, role: inv.role })
          .execute()
          .catch((err: unknown) => {
            throw isUniqueViolation(err) ? alreadyMember() : err;
          });
        await trx.updateTable('invitations').set({ accepted_at: new Date(), accepted_by: userId }).where('id', '=', inv.id).execute();
        await audit.record(trx, { orgId, action: 'invitation.accepted', target: { type: 'invitation', id: inv.id }, context: ctx });
        await audit.record(trx, { orgId, action: 'member.added', target: { type: 'user', id: userId }, changes: { role: { to: inv.role } }, context: ctx });
        const org = await trx.selectFrom('organizations').select(['id', 'name']).where('id', '=', orgId).executeTakeFirstOrThrow();
        return { orgId, orgName: org.name as string, role: inv.role as string, joinedAt: new Date() };
      });
    },
  };
}

export type Invitations = ReturnType<typeof createInvitations>;
