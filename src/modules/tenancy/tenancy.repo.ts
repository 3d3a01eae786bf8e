// Over 300 lines: the one file with all SQL of tenancy's four tables (orgs, memberships, invitations, API keys).
import { sql, type Selectable, type Transaction } from 'kysely';
import { setTenant, type Database, type DB, type DbScope, type TxHandle } from '../../platform/db/database.ts';

/** The tables tenancy owns, all tenant-owned (RLS ENABLE + FORCE). */
export type TenancyTables = Pick<DB, 'organizations' | 'memberships' | 'invitations' | 'api_keys'>;
export type TenancyTx = Transaction<TenancyTables>;

export interface Organization {
  id: string;
  name: string;
  createdAt: Date;
}

export interface MembershipRow {
  id: string;
  userId: string;
  role: string;
  createdAt: Date;
}

/** One of a user's memberships, across orgs. */
export interface Membership {
  orgId: string;
  orgName: string;
  role: string;
  joinedAt: Date;
}

export interface InvitationRow {
  id: string;
  email: string;
  role: string;
  expiresAt: Date;
  createdAt: Date;
  acceptedAt: Date | null;
  revokedAt: Date | null;
}

export interface ApiKeyRow {
  id: string;
  name: string;
  prefix: string;
  scopes: string[];
  createdBy: string;
  expiresAt: Date | null;
  lastUsedAt: Date | null;
  revokedAt: Date | null;
  createdAt: Date;
}

const ORG_COLUMNS = ['id', 'name', 'created_at'] as const;
const MEMBER_COLUMNS = ['id', 'user_id', 'role', 'created_at'] as const;
const INVITATION_COLUMNS = ['id', 'email', 'role', 'expires_at', 'created_at', 'accepted_at', 'revoked_at'] as const;
const API_KEY_COLUMNS = ['id', 'name', 'prefix', 'scopes', 'created_by', 'expires_at', 'last_used_at', 'revoked_at', 'created_at'] as const;

type Row<T extends keyof TenancyTables, C extends keyof Selectable<TenancyTables[T]>> = Pick<Selectable<TenancyTables[T]>, C>;

const toOrg = (r: Row<'organizations', (typeof ORG_COLUMNS)[number]>): Organization => ({ id: r.id, name: r.name, createdAt: new Date(r.created_at) });
const toMember = (r: Row<'memberships', (typeof MEMBER_COLUMNS)[number]>): MembershipRow => ({
  id: r.id,
  userId: r.user_id,
  role: r.role,
  createdAt: new Date(r.created_at),
});
const toInvitation = (r: Row<'invitations', (typeof INVITATION_COLUMNS)[number]>): InvitationRow => ({
  id: r.id,
  email: r.email,
  role: r.role,
  expiresAt: new Date(r.expires_at),
  createdAt: new Date(r.created_at),
  acceptedAt: r.accepted_at,
  revokedAt: r.revoked_at,
});

/** jsonb array of scopes (a string when a driver hands jsonb back unparsed). */
const parseScopes = (v: unknown): string[] => (typeof v === 'string' ? JSON.parse(v) : (v as string[]));

const toApiKey = (r: Row<'api_keys', (typeof API_KEY_COLUMNS)[number]>): ApiKeyRow => ({
  id: r.id,
  name: r.name,
  prefix: r.prefix,
  scopes: parseScopes(r.scopes),
  createdBy: r.created_by,
  expiresAt: r.expires_at ? new Date(r.expires_at) : null,
  lastUsedAt: r.last_used_at ? new Date(r.last_used_at) : null,
  revokedAt: r.revoked_at ? new Date(r.revoked_at) : null,
  createdAt: new Date(r.created_at),
});

/** All SQL of the tenancy module. Transactions come from withTenant (or the caller's, through join). */
export function createTenancyRepo(db: Database) {
  const scope: DbScope<TenancyTables> = db.scope('organizations', 'memberships', 'invitations', 'api_keys');

  return {
    withTenant: <R>(orgId: string, fn: (trx: TenancyTx) => Promise<R>) => scope.withTenant(orgId, fn),
    withTenantRead: <R>(orgId: string, fn: (trx: TenancyTx) => Promise<R>) => scope.withTenantRead(orgId, fn),
    /** Another module's transaction (signup's), typed with tenancy's tables. */
    join: (trx: TxHandle): TenancyTx => scope.join(trx),

    // ── organizations ──
    async insertOrg(trx: TenancyTx, org: { id: string; name: string; createdBy: string }): Promise<Organization> {
      const row = await trx
        .insertInto('organizations')
        .values({ tenant_id: org.id, id: org.id, name: org.name, created_by: org.createdBy })
        .returning(ORG_COLUMNS)
        .executeTakeFirstOrThrow();
      return toOrg(row);
    },

    async orgById(trx: TenancyTx, orgId: string): Promise<Organization | null> {
      const row = await trx.selectFrom('organizations').select(ORG_COLUMNS).where('id', '=', orgId).executeTakeFirst();
      return row ? toOrg(row) : null;
    },

    async lockOrgName(trx: TenancyTx, orgId: string): Promise<string> {
      const row = await trx.selectFrom('organizations').select('name').where('id', '=', orgId).forUpdate().executeTakeFirstOrThrow();
      return row.name;
    },

    async renameOrg(trx: TenancyTx, orgId: string, name: string): Promise<Organization> {
      const row = await trx
        .updateTable('organizations')
        .set({ name, updated_at: new Date() })
        .where('id', '=', orgId)
        .returning(ORG_COLUMNS)
        .executeTakeFirstOrThrow();
      return toOrg(row);
    },

    // ── memberships ──
    /** Throws the driver's unique violation when the user is already a member (see isUniqueViolation). */
    async insertMembership(trx: TenancyTx, m: { orgId: string; id: string; userId: string; role: string }): Promise<void> {
      await trx.insertInto('memberships').values({ tenant_id: m.orgId, id: m.id, user_id: m.userId, role: m.role }).execute();
    },

    async rolesOf(trx: TenancyTx, userIds: string[]): Promise<Map<string, string>> {
      if (userIds.length === 0) return new Map();
      const rows = await trx.selectFrom('memberships').select(['user_id', 'role']).where('user_id', 'in', userIds).execute();
      return new Map(rows.map((r) => [r.user_id, r.role]));
    },

    async membership(trx: TenancyTx, userId: string): Promise<MembershipRow | null> {
      const row = await trx.selectFrom('memberships').select(MEMBER_COLUMNS).where('user_id', '=', userId).executeTakeFirst();
      return row ? toMember(row) : null;
    },

    /** The member's role, its row locked until the transaction ends. */
    async lockMemberRole(trx: TenancyTx, userId: string): Promise<string | null> {
      const row = await trx.selectFrom('memberships').select('role').where('user_id', '=', userId).forUpdate().executeTakeFirst();
      return row?.role ?? null;
    },

    /** The org's owners, their rows locked (so two concurrent demotions cannot both pass a last-owner check). */
    async lockOwners(trx: TenancyTx, orgId: string): Promise<string[]> {
      const rows = await trx.selectFrom('memberships').select('user_id').where('tenant_id', '=', orgId).where('role', '=', 'owner').forUpdate().execute();
      return rows.map((r) => r.user_id);
    },

    async setRole(trx: TenancyTx, userId: string, role: string): Promise<void> {
      await trx.updateTable('memberships').set({ role, updated_at: new Date() }).where('user_id', '=', userId).execute();
    },

    async deleteMembership(trx: TenancyTx, userId: string): Promise<void> {
      await trx.deleteFrom('memberships').where('user_id', '=', userId).execute();
    },

    /** Members of the org, counted under a lock on the org row: joins of one org serialize on it (member limit). */
    async countMembersLocked(trx: TenancyTx, orgId: string): Promise<number> {
      await trx.selectFrom('organizations').select('id').where('id', '=', orgId).forUpdate().executeTakeFirst();
      const row = await trx.selectFrom('memberships').select((eb) => eb.fn.countAll<string>().as('n')).executeTakeFirstOrThrow();
      return Number(row.n);
    },

    /** How many members the org has (billing: seat-based prices and the member limit). */
    async countMembers(orgId: string): Promise<number> {
      const row = await scope.withTenant(orgId, (trx) => trx.selectFrom('memberships').select((eb) => eb.fn.countAll<string>().as('n')).executeTakeFirstOrThrow());
      return Number(row.n);
    },

    /** Members ordered by id (UUIDv7: join order), after `afterId`; fetches `limit` rows. */
    async listMembers(orgId: string, q: { afterId?: string; role?: string; limit: number }): Promise<MembershipRow[]> {
      const rows = await scope.withTenantRead(orgId, (trx) => {
        let query = trx.selectFrom('memberships').select(MEMBER_COLUMNS);
        if (q.afterId) query = query.where('id', '>', q.afterId);
        if (q.role) query = query.where('role', '=', q.role);
        return query.orderBy('id').limit(q.limit).execute();
      });
      return rows.map(toMember);
    },

    /** A user's memberships in every org: the one cross-tenant read, through the member_self_read policy. */
    async membershipsOf(userId: string): Promise<Membership[]> {
      const rows = await scope.app.transaction().execute(async (trx) => {
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
      return rows.map((r) => ({ ...r, joinedAt: new Date(r.joinedAt) }));
    },

    // ── invitations ──
    async insertInvitation(
      trx: TenancyTx,
      inv: { orgId: string; id: string; email: string; role: string; tokenHash: string; invitedBy: string; expiresAt: Date },
    ): Promise<InvitationRow> {
      const row = await trx
        .insertInto('invitations')
        .values({
          tenant_id: inv.orgId,
          id: inv.id,
          email: inv.email,
          role: inv.role,
          token_hash: inv.tokenHash,
          invited_by: inv.invitedBy,
          expires_at: inv.expiresAt,
        })
        .returning(INVITATION_COLUMNS)
        .executeTakeFirstOrThrow();
      return toInvitation(row);
    },

    async listInvitations(orgId: string, q: { afterId?: string; limit: number }): Promise<InvitationRow[]> {
      const rows = await scope.withTenantRead(orgId, (trx) => {
        let query = trx.selectFrom('invitations').select(INVITATION_COLUMNS);
        if (q.afterId) query = query.where('id', '>', q.afterId);
        return query.orderBy('id').limit(q.limit).execute();
      });
      return rows.map(toInvitation);
    },

    /** false when there is no pending invitation with that id. */
    async revokeInvitation(trx: TenancyTx, invitationId: string): Promise<boolean> {
      const res = await trx
        .updateTable('invitations')
        .set({ revoked_at: new Date() })
        .where('id', '=', invitationId)
        .where('accepted_at', 'is', null)
        .where('revoked_at', 'is', null)
        .executeTakeFirst();
      return Number(res.numUpdatedRows) > 0;
    },

    /** The invitation with that token hash, its row locked until the transaction ends. */
    async lockInvitationByTokenHash(trx: TenancyTx, tokenHash: string): Promise<InvitationRow | null> {
      const row = await trx.selectFrom('invitations').select(INVITATION_COLUMNS).where('token_hash', '=', tokenHash).forUpdate().executeTakeFirst();
      return row ? toInvitation(row) : null;
    },

    async markInvitationAccepted(trx: TenancyTx, invitationId: string, userId: string): Promise<void> {
      await trx.updateTable('invitations').set({ accepted_at: new Date(), accepted_by: userId }).where('id', '=', invitationId).execute();
    },

    // ── API keys ──
    async insertApiKey(
      trx: TenancyTx,
      key: { orgId: string; id: string; name: string; prefix: string; keyHash: string; scopes: string[]; createdBy: string; expiresAt: Date | null },
    ): Promise<ApiKeyRow> {
      const row = await trx
        .insertInto('api_keys')
        .values({
          tenant_id: key.orgId,
          id: key.id,
          name: key.name,
          prefix: key.prefix,
          key_hash: key.keyHash,
          scopes: JSON.stringify(key.scopes),
          created_by: key.createdBy,
          expires_at: key.expiresAt,
        })
        .returning(API_KEY_COLUMNS)
        .executeTakeFirstOrThrow();
      return toApiKey(row);
    },

    async listApiKeys(orgId: string, q: { afterId?: string; limit: number }): Promise<ApiKeyRow[]> {
      const rows = await scope.withTenantRead(orgId, (trx) => {
        let query = trx.selectFrom('api_keys').select(API_KEY_COLUMNS);
        if (q.afterId) query = query.where('id', '>', q.afterId);
        return query.orderBy('id').limit(q.limit).execute();
      });
      return rows.map(toApiKey);
    },

    async apiKeyById(trx: TenancyTx, keyId: string): Promise<ApiKeyRow | null> {
      const row = await trx.selectFrom('api_keys').select(API_KEY_COLUMNS).where('id', '=', keyId).executeTakeFirst();
      return row ? toApiKey(row) : null;
    },

    async apiKeyByHash(trx: TenancyTx, keyHash: string): Promise<ApiKeyRow | null> {
      const row = await trx.selectFrom('api_keys').select(API_KEY_COLUMNS).where('key_hash', '=', keyHash).executeTakeFirst();
      return row ? toApiKey(row) : null;
    },

    async touchApiKey(trx: TenancyTx, keyId: string): Promise<void> {
      await trx.updateTable('api_keys').set({ last_used_at: new Date() }).where('id', '=', keyId).execute();
    },

    /** false when there is no unrevoked key with that id. */
    async revokeApiKey(trx: TenancyTx, keyId: string): Promise<boolean> {
      const res = await trx.updateTable('api_keys').set({ revoked_at: new Date() }).where('id', '=', keyId).where('revoked_at', 'is', null).executeTakeFirst();
      return Number(res.numUpdatedRows) > 0;
    },

    /** Revokes the live keys `userId` created in the org of the transaction's tenant context; how many. */
    async revokeKeysCreatedBy(trx: TenancyTx, userId: string): Promise<number> {
      const rows = await trx.updateTable('api_keys').set({ revoked_at: new Date() }).where('created_by', '=', userId).where('revoked_at', 'is', null).returning('id').execute();
      return rows.length;
    },

    /** The orgs a user belongs to, from any tenant context (the member_self_read policy, app.user_id). */
    async orgsOfUser(trx: TenancyTx, userId: string): Promise<string[]> {
      await sql`select set_config('app.user_id', ${userId}, true)`.execute(trx);
      const rows = await trx.selectFrom('memberships').select('tenant_id').where('user_id', '=', userId).execute();
      return rows.map((r) => r.tenant_id);
    },

    /**
     * Data rights (export): per org the user belongs to, the API keys they created (no secrets). One app
     * transaction; orgs found through the member_self_read policy, then each in its tenant context.
     */
    async apiKeysCreatedByAcrossOrgs(userId: string) {
      return scope.app.transaction().execute(async (trx) => {
        await sql`select set_config('app.user_id', ${userId}, true)`.execute(trx);
        const orgs = await trx.selectFrom('memberships').select('tenant_id').where('user_id', '=', userId).execute();
        const out: Array<{ orgId: string; id: string; name: string; scopes: unknown; createdAt: Date; expiresAt: Date | null; revokedAt: Date | null; lastUsedAt: Date | null }> = [];
        for (const { tenant_id: orgId } of orgs) {
          await setTenant(trx, orgId);
          const keys = await trx
            .selectFrom('api_keys')
            .select(['id', 'name', 'scopes', 'created_at', 'expires_at', 'revoked_at', 'last_used_at'])
            .where('created_by', '=', userId)
            .orderBy('created_at')
            .execute();
          for (const k of keys) out.push({ orgId, id: k.id, name: k.name, scopes: k.scopes, createdAt: k.created_at, expiresAt: k.expires_at, revokedAt: k.revoked_at, lastUsedAt: k.last_used_at });
        }
        return out;
      });
    },

    /** The orgs where the user is the only owner while others are members (an erasure would orphan them). */
    async orgsUserSolelyOwnsWithOthers(userId: string): Promise<string[]> {
      return scope.app.transaction().execute(async (trx) => {
        await sql`select set_config('app.user_id', ${userId}, true)`.execute(trx);
        const owned = await trx.selectFrom('memberships').select('tenant_id').where('user_id', '=', userId).where('role', '=', 'owner').execute();
        const out: string[] = [];
        for (const { tenant_id: orgId } of owned) {
          await setTenant(trx, orgId);
          const r = await trx
            .selectFrom('memberships')
            .select([sql<number>`count(*) filter (where role = 'owner')::int`.as('owners'), sql<number>`count(*)::int`.as('members')])
            .where('tenant_id', '=', orgId)
            .executeTakeFirstOrThrow();
          if (r.owners === 1 && r.members > 1) out.push(orgId);
        }
        return out;
      });
    },

    /** The tenant context of the transaction (another module's, e.g. identity's disable), to restore it. */
    async currentTenant(trx: TenancyTx): Promise<string | null> {
      const { rows } = await sql<{ tenant: string | null }>`select nullif(current_setting('app.tenant_id', true), '') as tenant`.execute(trx);
      return rows[0]?.tenant ?? null;
    },
  };
}

export type TenancyRepo = ReturnType<typeof createTenancyRepo>;
