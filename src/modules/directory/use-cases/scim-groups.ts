import { isUniqueViolation } from '../../../platform/db/constraint-errors.ts';
import { isUuid, newId } from '../../../platform/ids.ts';
import { scimError, scimNotFound } from '../directory.errors.ts';
import type { DirectoryTx, ScimGroupRow } from '../directory.repo.ts';
import { patchGroup, type GroupAttrs, type PatchOp } from '../directory.scim.ts';
import type { DirectoryDeps, ScimCaller } from './deps.ts';
import { createMemberSync } from './sync-members.ts';

const conflict = () => scimError(409, 'uniqueness', 'A group with this displayName already exists in the organization');

/** SCIM Groups: membership in a mapped group decides the member's role (sync-members.ts). */
export function scimGroups(deps: DirectoryDeps) {
  const { repo, audit } = deps;
  const memberSync = createMemberSync(deps);

  /** Writes the group, then re-syncs the role of everyone who was or is in it. */
  async function write(caller: ScimCaller, action: string, groupId: string, fn: (trx: DirectoryTx) => Promise<{ before: string[]; attrs: GroupAttrs | null }>) {
    const sync = memberSync(caller);
    try {
      await repo.withTenant(caller.orgId, async (trx) => {
        const { before, attrs } = await fn(trx);
        const after = attrs?.memberIds ?? [];
        if (attrs) {
          const users = await repo.usersByIds(trx, after.filter(isUuid));
          if (users.length !== new Set(after).size) throw scimError(400, 'invalidValue', 'members[].value must be ids of users provisioned in this organization');
          await repo.setGroupMembers(trx, caller.orgId, groupId, after);
        } else {
          await repo.deleteGroup(trx, groupId);
        }
        for (const u of await repo.usersByIds(trx, [...new Set([...before, ...after])])) if (u.active) await sync.sync(trx, u);
        const added = after.filter((m) => !before.includes(m)).length;
        const removed = before.filter((m) => !after.includes(m)).length;
        await audit.record(trx, { orgId: caller.orgId, action, target: { type: 'scim_group', id: groupId }, changes: { membersAdded: added, membersRemoved: removed, ...(attrs ? { displayName: attrs.displayName } : {}) }, context: caller.ctx });
      });
    } catch (err) {
      if (isUniqueViolation(err)) throw conflict();
      throw err;
    }
    await sync.afterCommit();
  }

  async function get(orgId: string, id: string): Promise<ScimGroupRow> {
    const row = isUuid(id) ? await repo.withTenantRead(orgId, (trx) => repo.groupById(trx, id)) : null;
    if (!row) throw scimNotFound('Group');
    return row;
  }

  async function save(caller: ScimCaller, id: string, next: (current: GroupAttrs) => GroupAttrs): Promise<ScimGroupRow> {
    if (!isUuid(id)) throw scimNotFound('Group');
    await write(caller, 'scim.group_updated', id, async (trx) => {
      const row = await repo.groupById(trx, id, true);
      if (!row) throw scimNotFound('Group');
      const before = row.members.map((m) => m.id);
      const attrs = next({ displayName: row.displayName, externalId: row.externalId, memberIds: before });
      await repo.updateGroup(trx, id, attrs);
      return { before, attrs };
    });
    return get(caller.orgId, id);
  }

  return {
    get,
    list: (orgId: string, q: { attr?: 'displayName' | 'externalId'; value?: string; startIndex: number; count: number }) =>
      repo.withTenantRead(orgId, (trx) => repo.listGroups(trx, q)),

    async create(caller: ScimCaller, attrs: GroupAttrs): Promise<ScimGroupRow> {
      const id = newId();
      await write(caller, 'scim.group_created', id, async (trx) => {
        await repo.insertGroup(trx, caller.orgId, id, attrs);
        return { before: [], attrs };
      });
      return get(caller.orgId, id);
    },

    replace: (caller: ScimCaller, id: string, attrs: GroupAttrs) => save(caller, id, () => attrs),
    patch: (caller: ScimCaller, id: string, ops: PatchOp[]) => save(caller, id, (current) => patchGroup(current, ops)),

    async remove(caller: ScimCaller, id: string): Promise<void> {
      if (!isUuid(id)) throw scimNotFound('Group');
      await write(caller, 'scim.group_deleted', id, async (trx) => {
        const row = await repo.groupById(trx, id, true);
        if (!row) throw scimNotFound('Group');
        return { before: row.members.map((m) => m.id), attrs: null };
      });
    },
  };
}
