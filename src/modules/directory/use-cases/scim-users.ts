import { isUniqueViolation } from '../../../platform/db/constraint-errors.ts';
import { isUuid, newId } from '../../../platform/ids.ts';
import { newSecret } from '../../identity/index.ts';
import { scimError, scimNotFound } from '../directory.errors.ts';
import type { DirectoryTx, ScimUserAttrs, ScimUserRow } from '../directory.repo.ts';
import type { PatchOp } from '../directory.scim.ts';
import { patchUser } from '../directory.scim.ts';
import type { DirectoryDeps, ScimCaller } from './deps.ts';
import { createMemberSync } from './sync-members.ts';

const conflict = () => scimError(409, 'uniqueness', 'A user with this userName (or this account) is already provisioned in the organization');

/** Attribute names that changed (audited without their values: they are personal data). */
function changedFields(a: ScimUserAttrs, b: ScimUserAttrs): string[] {
  return (Object.keys(a) as Array<keyof ScimUserAttrs>).filter((k) => k !== 'active' && a[k] !== b[k]);
}

/** SCIM Users: provisioning creates (or links, by e-mail) the account and the membership in one transaction. */
export function scimUsers(deps: DirectoryDeps) {
  const { repo, audit, identity } = deps;
  const memberSync = createMemberSync(deps);

  async function run<T>(caller: ScimCaller, fn: (trx: DirectoryTx, sync: ReturnType<typeof memberSync>) => Promise<T>): Promise<T> {
    const sync = memberSync(caller);
    let result: T;
    try {
      result = await repo.withTenant(caller.orgId, (trx) => fn(trx, sync));
    } catch (err) {
      if (isUniqueViolation(err)) throw conflict();
      throw err;
    }
    await sync.afterCommit();
    return result;
  }

  async function get(orgId: string, id: string): Promise<ScimUserRow> {
    const row = isUuid(id) ? await repo.withTenantRead(orgId, (trx) => repo.userById(trx, id)) : null;
    if (!row) throw scimNotFound('User');
    return row;
  }

  /** Replaces the user's attributes with `next(current)` and syncs the membership (PUT and PATCH). */
  async function save(caller: ScimCaller, id: string, next: (current: ScimUserAttrs) => ScimUserAttrs): Promise<ScimUserRow> {
    if (!isUuid(id)) throw scimNotFound('User');
    await run(caller, async (trx, sync) => {
      const row = await repo.userById(trx, id, true);
      if (!row) throw scimNotFound('User');
      const attrs = next(row);
      await repo.updateUser(trx, id, attrs);
      await sync.sync(trx, { id, userId: row.userId, active: attrs.active });
      if (row.active && !attrs.active) sync.deprovisioned(row.userId);
      const fields = changedFields(row, attrs);
      const action = row.active === attrs.active ? 'scim.user_updated' : attrs.active ? 'scim.user_reactivated' : 'scim.user_deactivated';
      await audit.record(trx, { orgId: caller.orgId, action, target: { type: 'scim_user', id }, changes: { userId: row.userId, fields, ...(row.active !== attrs.active ? { active: { from: row.active, to: attrs.active } } : {}) }, context: caller.ctx });
    });
    return get(caller.orgId, id);
  }

  return {
    get,

    list: (orgId: string, q: { attr?: 'userName' | 'externalId'; value?: string; startIndex: number; count: number }) =>
      repo.withTenantRead(orgId, (trx) => repo.listUsers(trx, q)),

    async create(caller: ScimCaller, attrs: ScimUserAttrs): Promise<ScimUserRow> {
      const existing = await identity.findUserByEmail(attrs.email);
      // A provisioned account signs in through the org's IdP (SSO); its password is random and never shown.
      const passwordHash = existing ? null : await identity.preparePassword(newSecret('scim-'), {});
      const id = newId();
      await run(caller, async (trx, sync) => {
        if ((await repo.listUsers(trx, { attr: 'userName', value: attrs.userName, startIndex: 1, count: 0 })).total > 0) throw conflict();
        const name = (attrs.displayName ?? [attrs.givenName, attrs.familyName].filter(Boolean).join(' ')) || attrs.userName;
        const userId = existing?.id ?? (await identity.createUser(trx, { email: attrs.email, name: name.slice(0, 100), passwordHash: passwordHash! })).id;
        if (await repo.userByUserId(trx, userId)) throw conflict();
        await repo.insertUser(trx, caller.orgId, id, userId, attrs);
        await sync.sync(trx, { id, userId, active: attrs.active });
        await audit.record(trx, { orgId: caller.orgId, action: 'scim.user_created', target: { type: 'scim_user', id }, changes: { userId, linkedExisting: Boolean(existing), active: attrs.active }, context: caller.ctx });
      });
      return get(caller.orgId, id);
    },

    replace: (caller: ScimCaller, id: string, attrs: ScimUserAttrs) => save(caller, id, () => attrs),

    patch: (caller: ScimCaller, id: string, ops: PatchOp[]) => save(caller, id, (current) => patchUser(current, ops)),

    /** Deletes the SCIM resource and deprovisions the member (membership, API keys, sessions); the account itself stays. */
    async remove(caller: ScimCaller, id: string): Promise<void> {
      if (!isUuid(id)) throw scimNotFound('User');
      await run(caller, async (trx, sync) => {
        const row = await repo.userById(trx, id, true);
        if (!row) throw scimNotFound('User');
        await sync.sync(trx, { id, userId: row.userId, active: false });
        sync.deprovisioned(row.userId);
        await repo.deleteUser(trx, id);
        await audit.record(trx, { orgId: caller.orgId, action: 'scim.user_deleted', target: { type: 'scim_user', id }, changes: { userId: row.userId }, context: caller.ctx });
      });
    },
  };
}
