import type { ActorContext } from '../../platform/http/actor.ts';
import { isUuid, newId } from '../../platform/ids.ts';
import { newSecret, sha256Hex } from '../identity/index.ts';
import { tokenNotFound } from './directory.errors.ts';
import type { ScimTokenRow } from './directory.repo.ts';
import type { DirectoryDeps } from './use-cases/deps.ts';
import { scimGroups } from './use-cases/scim-groups.ts';
import { scimUsers } from './use-cases/scim-users.ts';
import { createMemberSync } from './use-cases/sync-members.ts';

export const SCIM_TOKEN_PREFIX = 'scim_';
const TOUCH_AFTER_MS = 60_000;

/** Tokens, the group → role mapping, and the SCIM resources (use-cases/). */
export function createDirectoryService(deps: DirectoryDeps) {
  const { repo, audit } = deps;
  const memberSync = createMemberSync(deps);

  return {
    users: scimUsers(deps),
    groups: scimGroups(deps),

    /** A new token for the org's IdP; the secret is returned only here and stored as its SHA-256. */
    async createToken(orgId: string, name: string, ctx: ActorContext): Promise<ScimTokenRow & { token: string }> {
      const token = newSecret(SCIM_TOKEN_PREFIX);
      const row = await repo.withTenant(orgId, async (trx) => {
        const row = await repo.insertToken(trx, { orgId, id: newId(), name, tokenHash: sha256Hex(token), createdBy: ctx.actor.userId });
        await audit.record(trx, { orgId, action: 'scim.token_created', target: { type: 'scim_token', id: row.id }, changes: { name }, context: ctx });
        return row;
      });
      return { ...row, token };
    },

    listTokens: (orgId: string) => repo.withTenantRead(orgId, (trx) => repo.listTokens(trx)),

    async revokeToken(orgId: string, id: string, ctx: ActorContext): Promise<void> {
      if (!isUuid(id)) throw tokenNotFound();
      await repo.withTenant(orgId, async (trx) => {
        if (!(await repo.revokeToken(trx, id))) throw tokenNotFound();
        await audit.record(trx, { orgId, action: 'scim.token_revoked', target: { type: 'scim_token', id }, context: ctx });
      });
    },

    /** The id of the org's live token presented, or null. Looked up in the org's tenant context only. */
    async authenticate(orgId: string, token: string): Promise<string | null> {
      if (!isUuid(orgId) || !token.startsWith(SCIM_TOKEN_PREFIX) || token.length > 100) return null;
      return repo.withTenant(orgId, async (trx) => {
        const row = await repo.activeTokenByHash(trx, sha256Hex(token));
        if (!row) return null;
        if (!row.lastUsedAt || Date.now() - row.lastUsedAt.getTime() > TOUCH_AFTER_MS) await repo.touchToken(trx, row.id);
        return row.id;
      });
    },

    groupRoles: (orgId: string) => repo.withTenantRead(orgId, (trx) => repo.groupRoles(trx)),

    /** Replaces the mapping and re-syncs the role of every active directory user of the org. */
    async setGroupRoles(orgId: string, mappings: Array<{ group: string; role: string }>, ctx: ActorContext) {
      const sync = memberSync({ orgId, ctx });
      await repo.withTenant(orgId, async (trx) => {
        await repo.replaceGroupRoles(trx, orgId, mappings);
        for (const u of await repo.usersByIds(trx, await repo.allActiveUserIds(trx))) await sync.sync(trx, u);
        await audit.record(trx, { orgId, action: 'scim.group_roles_set', target: { type: 'organization', id: orgId }, changes: { mappings }, context: ctx });
      });
      await sync.afterCommit();
      return repo.withTenantRead(orgId, (trx) => repo.groupRoles(trx));
    },
  };
}

export type DirectoryService = ReturnType<typeof createDirectoryService>;
