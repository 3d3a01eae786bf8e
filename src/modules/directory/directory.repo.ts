import { sql, type Selectable, type Transaction } from 'kysely';
import type { Database, DB, DbScope, TxHandle } from '../../platform/db/database.ts';

/** The tables directory owns, all tenant-owned (RLS). */
export type DirectoryTables = Pick<DB, 'scim_tokens' | 'scim_users' | 'scim_groups' | 'scim_group_members' | 'scim_group_roles'>;
export type DirectoryTx = Transaction<DirectoryTables>;

export interface ScimTokenRow {
  id: string;
  name: string;
  createdBy: string | null;
  createdAt: Date;
  lastUsedAt: Date | null;
  revokedAt: Date | null;
}

/** The SCIM attributes Plinth keeps for a provisioned user. */
export interface ScimUserAttrs {
  userName: string;
  externalId: string | null;
  displayName: string | null;
  givenName: string | null;
  familyName: string | null;
  email: string;
  active: boolean;
}

export interface ScimUserRow extends ScimUserAttrs {
  id: string;
  userId: string;
  version: number;
  createdAt: Date;
  updatedAt: Date;
  groups: Array<{ id: string; displayName: string }>;
}

export interface ScimGroupRow {
  id: string;
  displayName: string;
  externalId: string | null;
  version: number;
  createdAt: Date;
  updatedAt: Date;
  members: Array<{ id: string; userName: string }>;
}

const userKey = (userName: string) => userName.toLowerCase();

const toToken = (r: Selectable<DirectoryTables['scim_tokens']>): ScimTokenRow => ({
  id: r.id,
  name: r.name,
  createdBy: r.created_by,
  createdAt: new Date(r.created_at),
  lastUsedAt: r.last_used_at ? new Date(r.last_used_at) : null,
  revokedAt: r.revoked_at ? new Date(r.revoked_at) : null,
});

/** All SQL of the directory module. */
export function createDirectoryRepo(db: Database) {
  const scope: DbScope<DirectoryTables> = db.scope('scim_tokens', 'scim_users', 'scim_groups', 'scim_group_members', 'scim_group_roles');

  /** Group ↔ user pairs for a set of users (their groups) or of groups (their members), one query. */
  async function pairs(trx: DirectoryTx, by: 'user' | 'group', ids: string[]): Promise<Map<string, Array<{ id: string; label: string }>>> {
    const out = new Map<string, Array<{ id: string; label: string }>>();
    if (ids.length === 0) return out;
    const rows = await trx
      .selectFrom('scim_group_members as m')
      .innerJoin('scim_groups as g', (j) => j.onRef('g.tenant_id', '=', 'm.tenant_id').onRef('g.id', '=', 'm.group_id'))
      .innerJoin('scim_users as u', (j) => j.onRef('u.tenant_id', '=', 'm.tenant_id').onRef('u.id', '=', 'm.scim_user_id'))
      .select(['m.scim_user_id', 'm.group_id', 'g.display_name', 'u.user_name'])
      .where(by === 'user' ? 'm.scim_user_id' : 'm.group_id', 'in', ids)
      .orderBy(by === 'user' ? 'g.display_name' : 'u.id')
      .execute();
    for (const r of rows) {
      const [key, item] = by === 'user' ? [r.scim_user_id, { id: r.group_id, label: r.display_name }] : [r.group_id, { id: r.scim_user_id, label: r.user_name }];
      out.set(key, [...(out.get(key) ?? []), item]);
    }
    return out;
  }

  async function usersWithGroups(trx: DirectoryTx, rows: Selectable<DirectoryTables['scim_users']>[]): Promise<ScimUserRow[]> {
    const groups = await pairs(trx, 'user', rows.map((r) => r.id));
    return rows.map((r) => ({
      id: r.id,
      userId: r.user_id,
      userName: r.user_name,
      externalId: r.external_id,
      displayName: r.display_name,
      givenName: r.given_name,
      familyName: r.family_name,
      email: r.email,
      active: r.active,
      version: r.version,
      createdAt: new Date(r.created_at),
      updatedAt: new Date(r.updated_at),
      groups: (groups.get(r.id) ?? []).map((g) => ({ id: g.id, displayName: g.label })),
    }));
  }

  async function groupsWithMembers(trx: DirectoryTx, rows: Selectable<DirectoryTables['scim_groups']>[]): Promise<ScimGroupRow[]> {
    const members = await pairs(trx, 'group', rows.map((r) => r.id));
    return rows.map((r) => ({
      id: r.id,
      displayName: r.display_name,
      externalId: r.external_id,
      version: r.version,
      createdAt: new Date(r.created_at),
      updatedAt: new Date(r.updated_at),
      members: (members.get(r.id) ?? []).map((m) => ({ id: m.id, userName: m.label })),
    }));
  }

  return {
    withTenant: <R>(orgId: string, fn: (trx: DirectoryTx) => Promise<R>) => scope.withTenant(orgId, fn),
    withTenantRead: <R>(orgId: string, fn: (trx: DirectoryTx) => Promise<R>) => scope.withTenantRead(orgId, fn),
    join: (trx: TxHandle): DirectoryTx => scope.join(trx),

    // ── tokens ──
    async insertToken(trx: DirectoryTx, t: { orgId: string; id: string; name: string; tokenHash: string; createdBy: string | null }): Promise<ScimTokenRow> {
      const row = await trx
        .insertInto('scim_tokens')
        .values({ tenant_id: t.orgId, id: t.id, name: t.name, token_hash: t.tokenHash, created_by: t.createdBy })
        .returningAll()
        .executeTakeFirstOrThrow();
      return toToken(row);
    },
    async listTokens(trx: DirectoryTx): Promise<ScimTokenRow[]> {
      return (await trx.selectFrom('scim_tokens').selectAll().orderBy('id', 'desc').limit(100).execute()).map(toToken);
    },
    async revokeToken(trx: DirectoryTx, id: string): Promise<boolean> {
      const r = await trx.updateTable('scim_tokens').set({ revoked_at: new Date() }).where('id', '=', id).where('revoked_at', 'is', null).executeTakeFirst();
      return Number(r.numUpdatedRows) > 0;
    },
    /** The live token with this hash in the org (RLS: another org's token is invisible here). */
    async activeTokenByHash(trx: DirectoryTx, tokenHash: string): Promise<{ id: string; lastUsedAt: Date | null } | null> {
      const row = await trx.selectFrom('scim_tokens').select(['id', 'last_used_at']).where('token_hash', '=', tokenHash).where('revoked_at', 'is', null).executeTakeFirst();
      return row ? { id: row.id, lastUsedAt: row.last_used_at ? new Date(row.last_used_at) : null } : null;
    },
    async touchToken(trx: DirectoryTx, id: string): Promise<void> {
      await trx.updateTable('scim_tokens').set({ last_used_at: new Date() }).where('id', '=', id).execute();
    },

    // ── users ──
    async insertUser(trx: DirectoryTx, orgId: string, id: string, userId: string, a: ScimUserAttrs): Promise<void> {
      await trx
        .insertInto('scim_users')
        .values({
          tenant_id: orgId,
          id,
          user_id: userId,
          user_name: a.userName,
          user_name_key: userKey(a.userName),
          external_id: a.externalId,
          display_name: a.displayName,
          given_name: a.givenName,
          family_name: a.familyName,
          email: a.email,
          active: a.active,
        })
        .execute();
    },
    async updateUser(trx: DirectoryTx, id: string, a: ScimUserAttrs): Promise<void> {
      await trx
        .updateTable('scim_users')
        .set({
          user_name: a.userName,
          user_name_key: userKey(a.userName),
          external_id: a.externalId,
          display_name: a.displayName,
          given_name: a.givenName,
          family_name: a.familyName,
          email: a.email,
          active: a.active,
          version: sql<number>`version + 1`,
          updated_at: new Date(),
        })
        .where('id', '=', id)
        .execute();
    },
    async deleteUser(trx: DirectoryTx, id: string): Promise<void> {
      await trx.deleteFrom('scim_users').where('id', '=', id).execute();
    },
    async userById(trx: DirectoryTx, id: string, lock = false): Promise<ScimUserRow | null> {
      let q = trx.selectFrom('scim_users').selectAll().where('id', '=', id);
      if (lock) q = q.forUpdate();
      const row = await q.executeTakeFirst();
      return row ? (await usersWithGroups(trx, [row]))[0]! : null;
    },
    async usersByIds(trx: DirectoryTx, ids: string[]): Promise<Array<{ id: string; userId: string; active: boolean }>> {
      if (ids.length === 0) return [];
      const rows = await trx.selectFrom('scim_users').select(['id', 'user_id', 'active']).where('id', 'in', ids).execute();
      return rows.map((r) => ({ id: r.id, userId: r.user_id, active: r.active }));
    },
    async userByUserId(trx: DirectoryTx, userId: string): Promise<{ id: string } | null> {
      return (await trx.selectFrom('scim_users').select('id').where('user_id', '=', userId).executeTakeFirst()) ?? null;
    },
    /** SCIM list: `filter` is one equality on a whitelisted attribute; 1-based `startIndex`. */
    async listUsers(trx: DirectoryTx, f: { attr?: 'userName' | 'externalId'; value?: string; startIndex: number; count: number }) {
      let q = trx.selectFrom('scim_users');
      if (f.attr === 'userName') q = q.where('user_name_key', '=', userKey(f.value!));
      if (f.attr === 'externalId') q = q.where('external_id', '=', f.value!);
      const { total } = await q.select(sql<number>`count(*)::int`.as('total')).executeTakeFirstOrThrow();
      const rows = f.count === 0 ? [] : await q.selectAll().orderBy('id').offset(f.startIndex - 1).limit(f.count).execute();
      return { total, users: await usersWithGroups(trx, rows) };
    },
    async allActiveUserIds(trx: DirectoryTx): Promise<string[]> {
      return (await trx.selectFrom('scim_users').select('id').where('active', '=', true).execute()).map((r) => r.id);
    },

    // ── groups ──
    async insertGroup(trx: DirectoryTx, orgId: string, id: string, g: { displayName: string; externalId: string | null }): Promise<void> {
      await trx.insertInto('scim_groups').values({ tenant_id: orgId, id, display_name: g.displayName, external_id: g.externalId }).execute();
    },
    async updateGroup(trx: DirectoryTx, id: string, g: { displayName: string; externalId: string | null }): Promise<void> {
      await trx
        .updateTable('scim_groups')
        .set({ display_name: g.displayName, external_id: g.externalId, version: sql<number>`version + 1`, updated_at: new Date() })
        .where('id', '=', id)
        .execute();
    },
    async deleteGroup(trx: DirectoryTx, id: string): Promise<void> {
      await trx.deleteFrom('scim_groups').where('id', '=', id).execute();
    },
    async groupById(trx: DirectoryTx, id: string, lock = false): Promise<ScimGroupRow | null> {
      let q = trx.selectFrom('scim_groups').selectAll().where('id', '=', id);
      if (lock) q = q.forUpdate();
      const row = await q.executeTakeFirst();
      return row ? (await groupsWithMembers(trx, [row]))[0]! : null;
    },
    async listGroups(trx: DirectoryTx, f: { attr?: 'displayName' | 'externalId'; value?: string; startIndex: number; count: number }) {
      let q = trx.selectFrom('scim_groups');
      if (f.attr === 'displayName') q = q.where('display_name', '=', f.value!);
      if (f.attr === 'externalId') q = q.where('external_id', '=', f.value!);
      const { total } = await q.select(sql<number>`count(*)::int`.as('total')).executeTakeFirstOrThrow();
      const rows = f.count === 0 ? [] : await q.selectAll().orderBy('id').offset(f.startIndex - 1).limit(f.count).execute();
      return { total, groups: await groupsWithMembers(trx, rows) };
    },
    async setGroupMembers(trx: DirectoryTx, orgId: string, groupId: string, scimUserIds: string[]): Promise<void> {
      await trx.deleteFrom('scim_group_members').where('group_id', '=', groupId).execute();
      if (scimUserIds.length === 0) return;
      await trx
        .insertInto('scim_group_members')
        .values([...new Set(scimUserIds)].map((u) => ({ tenant_id: orgId, group_id: groupId, scim_user_id: u })))
        .execute();
    },
    /** Display names of the groups a SCIM user is in (role computation). */
    async groupNamesOf(trx: DirectoryTx, scimUserId: string): Promise<string[]> {
      const rows = await trx
        .selectFrom('scim_group_members as m')
        .innerJoin('scim_groups as g', (j) => j.onRef('g.tenant_id', '=', 'm.tenant_id').onRef('g.id', '=', 'm.group_id'))
        .select('g.display_name')
        .where('m.scim_user_id', '=', scimUserId)
        .execute();
      return rows.map((r) => r.display_name);
    },

    // ── group → role mapping ──
    async groupRoles(trx: DirectoryTx): Promise<Array<{ group: string; role: string }>> {
      const rows = await trx.selectFrom('scim_group_roles').select(['group_name', 'role']).orderBy('group_name').execute();
      return rows.map((r) => ({ group: r.group_name, role: r.role }));
    },
    async replaceGroupRoles(trx: DirectoryTx, orgId: string, mappings: Array<{ group: string; role: string }>): Promise<void> {
      await trx.deleteFrom('scim_group_roles').execute();
      if (mappings.length === 0) return;
      await trx.insertInto('scim_group_roles').values(mappings.map((m) => ({ tenant_id: orgId, group_name: m.group, role: m.role }))).execute();
    },
  };
}

export type DirectoryRepo = ReturnType<typeof createDirectoryRepo>;
