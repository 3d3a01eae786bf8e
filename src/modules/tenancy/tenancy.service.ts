import { sql, type Transaction } from 'kysely';
import type { Database } from '../../platform/db/database.ts';
import { AppError } from '../../platform/http/errors.ts';
import { newId } from '../../platform/ids.ts';
import type { Audit, AuditContext } from '../audit/index.ts';
import type { Identity, User } from '../identity/index.ts';
import { lastOwner, memberNotFound, roleNotAllowed } from './tenancy.errors.ts';
import { revokeKeysCreatedBy } from './tenancy.key-revocation.ts';
import { decodeCursor, page } from './tenancy.paging.ts';
import { isSubset, permissionsOf, type Role } from './tenancy.roles.ts';

export interface Organization {
  id: string;
  name: string;
  createdAt: Date;
}

export interface Member {
  userId: string;
  email: string;
  name: string;
  role: string;
  joinedAt: Date;
}

export interface TenancyDeps {
  db: Database;
  audit: Audit;
  identity: Identity;
}

const toOrg = (r: Record<string, any>): Organization => ({ id: r.id, name: r.name, createdAt: new Date(r.created_at) });

export function createTenancyService(deps: TenancyDeps) {
  const { db, audit, identity } = deps;

  async function insertOrgWithOwner(trx: Transaction<any>, orgId: string, name: string, ownerId: string, ctx: AuditContext) {
    const org = await trx
      .insertInto('organizations')
      .values({ tenant_id: orgId, id: orgId, name: name.trim(), created_by: ownerId })
      .returning(['id', 'name', 'created_at'])
      .executeTakeFirstOrThrow();
    await trx.insertInto('memberships').values({ tenant_id: orgId, id: newId(), user_id: ownerId, role: 'owner' }).execute();
    await audit.record(trx, { orgId, action: 'org.created', target: { type: 'organization', id: orgId }, changes: { name: { to: org.name } }, context: ctx });
    await audit.record(trx, { orgId, action: 'member.added', target: { type: 'user', id: ownerId }, changes: { role: { to: 'owner' } }, context: ctx });
    return toOrg(org);
  }

  /** Locks the org's owner rows so two concurrent demotions cannot both pass the last-owner check. */
  async function assertNotLastOwner(trx: Transaction<any>, orgId: string, userId: string): Promise<void> {
    const owners = await trx.selectFrom('memberships').select('user_id').where('tenant_id', '=', orgId).where('role', '=', 'owner').forUpdate().execute();
    if (owners.length <= 1 && owners.some((o) => o.user_id === userId)) throw lastOwner();
  }

  async function getMember(orgId: string, userId: string): Promise<Member> {
    const row = await db.withTenant(orgId, (trx) => trx.selectFrom('memberships').select(['id', 'user_id', 'role', 'created_at']).where('user_id', '=', userId).executeTakeFirst());
    if (!row) throw memberNotFound();
    return memberJson(row as any, (await identity.getUsers([userId])).get(userId));
  }

  function assertMayGrant(role: string, held: ReadonlySet<string>): void {
    if (!isSubset(permissionsOf(role), held)) throw roleNotAllowed(role);
  }

  return {
    /** One transaction: user, org, owner membership, first session and their audit events. */
    async signup(
      input: { email: string; password: string; name: string; organizationName: string },
      meta: { ip: string; userAgent: string | null; requestId: string },
    ) {
      const passwordHash = await identity.preparePassword(input.password, { email: input.email, name: input.name });
      const orgId = newId();
      return db.withTenant(orgId, async (trx) => {
        const user = await identity.insertUser(trx, { email: input.email, name: input.name, passwordHash });
        const ctx: AuditContext = { actor: { type: 'user', id: user.id, userId: user.id }, requestId: meta.requestId, ip: meta.ip };
        await audit.record(trx, { orgId, action: 'user.signed_up', target: { type: 'user', id: user.id }, changes: { email: { to: user.email } }, context: ctx });
        const organization = await insertOrgWithOwner(trx, orgId, input.organizationName, user.id, ctx);
        const session = await identity.sessions.create(trx, user.id, meta);
        return { user, organization, session };
      });
    },

    async createOrg(userId: string, name: string, ctx: AuditContext): Promise<Organization> {
      const orgId = newId();
      return db.withTenant(orgId, (trx) => insertOrgWithOwner(trx, orgId, name, userId, ctx));
    },

    async getOrg(orgId: string): Promise<Organization> {
      const row = await db.withTenant(orgId, (trx) => trx.selectFrom('organizations').select(['id', 'name', 'created_at']).where('id', '=', orgId).executeTakeFirst());
      if (!row) throw new AppError('ORG.NOT_FOUND', 404, 'Organization not found');
      return toOrg(row);
    },

    async renameOrg(orgId: string, name: string, ctx: AuditContext): Promise<Organization> {
      return db.withTenant(orgId, async (trx) => {
        const before = await trx.selectFrom('organizations').select('name').where('id', '=', orgId).forUpdate().executeTakeFirstOrThrow();
        const row = await trx.updateTable('organizations').set({ name: name.trim(), updated_at: new Date() }).where('id', '=', orgId).returning(['id', 'name', 'created_at']).executeTakeFirstOrThrow();
        await audit.record(trx, { orgId, action: 'org.updated', target: { type: 'organization', id: orgId }, changes: { name: { from: before.name, to: row.name } }, context: ctx });
        return toOrg(row);
      });
    },

    /** A user's memberships in every org: the one cross-tenant read, through the member_self_read policy. */
    async membershipsOf(userId: string) {
      return db.app.transaction().execute(async (trx) => {
        await sql`select set_config('app.user_id', ${userId}, true)`.execute(trx);
        return trx
          .selectFrom('memberships as m')
          .innerJoin('organizations as o', (j) => j.onRef('o.tenant_id', '=', 'm.tenant_id').onRef('o.id', '=', 'm.tenant_id'))
          .select(['m.tenant_id as orgId', 'o.name as orgName', 'm.role', 'm.created_at as joinedAt'])
          .where('m.user_id', '=', userId)
          .orderBy('m.created_at', 'asc')
          .limit(1000)
          .execute();
      });
    },

    /** The caller's role in the org, or null (not a member / no such org). */
    async roleOf(orgId: string, userId: string): Promise<string | null> {
      const row = await db.withTenant(orgId, (trx) => trx.selectFrom('memberships').select('role').where('user_id', '=', userId).executeTakeFirst());
      return (row?.role as string | undefined) ?? null;
    },

    async listMembers(orgId: string, q: { cursor?: string; limit?: number; role?: string }) {
      const limit = Math.min(q.limit ?? 50, 100);
      const shape = { list: 'members', role: q.role };
      const after = decodeCursor(q.cursor, shape);
      const rows = await db.withTenantRead(orgId, (trx) => {
        let query = trx.selectFrom('memberships').select(['id', 'user_id', 'role', 'created_at']);
        if (after) query = query.where('id', '>', after);
        if (q.role) query = query.where('role', '=', q.role);
        return query.orderBy('id').limit(limit + 1).execute();
      });
      const users = await identity.getUsers(rows.map((r) => r.user_id as string));
      return page(rows as Array<{ id: string; user_id: string; role: string; created_at: Date }>, limit, shape, (r) => memberJson(r, users.get(r.user_id)));
    },

    getMember,

    async changeRole(orgId: string, userId: string, role: Role, held: ReadonlySet<string>, ctx: AuditContext): Promise<Member> {
      assertMayGrant(role, held);
      await db.withTenant(orgId, async (trx) => {
        const current = await trx.selectFrom('memberships').select('role').where('user_id', '=', userId).forUpdate().executeTakeFirst();
        if (!current) throw memberNotFound();
        if (current.role === role) return;
        assertMayGrant(current.role, held);
        if (current.role === 'owner') await assertNotLastOwner(trx, orgId, userId);
        await trx.updateTable('memberships').set({ role, updated_at: new Date() }).where('user_id', '=', userId).execute();
        await audit.record(trx, { orgId, action: 'member.role_changed', target: { type: 'user', id: userId }, changes: { role: { from: current.role, to: role } }, context: ctx });
      });
      return getMember(orgId, userId);
    },

    /** Leaving (self) needs only membership; removing someone else needs members:manage. */
    async removeMember(orgId: string, userId: string, actorUserId: string, held: ReadonlySet<string>, ctx: AuditContext): Promise<void> {
      const self = userId === actorUserId && ctx.actor.type === 'user';
      if (!self && !held.has('members:manage')) {
        throw new AppError('AUTH.FORBIDDEN', 403, 'This action needs the permission members:manage', { permission: 'members:manage' });
      }
      await db.withTenant(orgId, async (trx) => {
        const current = await trx.selectFrom('memberships').select('role').where('user_id', '=', userId).forUpdate().executeTakeFirst();
        if (!current) throw memberNotFound();
        if (!self) assertMayGrant(current.role, held);
        if (current.role === 'owner') await assertNotLastOwner(trx, orgId, userId);
        await trx.deleteFrom('memberships').where('user_id', '=', userId).execute();
        const apiKeysRevoked = await revokeKeysCreatedBy(trx, userId);
        await audit.record(trx, { orgId, action: self ? 'member.left' : 'member.removed', target: { type: 'user', id: userId }, changes: { role: { from: current.role }, ...(apiKeysRevoked > 0 ? { apiKeysRevoked } : {}) }, context: ctx });
      });
    },

    assertMayGrant,
  };
}

function memberJson(r: { user_id: string; role: string; created_at: Date }, user: User | undefined) {
  return { userId: r.user_id, email: user?.email ?? '', name: user?.name ?? '', role: r.role, joinedAt: new Date(r.created_at) };
}

export type TenancyService = ReturnType<typeof createTenancyService>;
