import { setTenant } from '../../../platform/db/database.ts';
import { systemActor } from '../../../platform/http/actor.ts';
import { AppError } from '../../../platform/http/errors.ts';
import type { JobRegistry } from '../../../platform/outbox/registry.ts';
import { USER_ERASED, type UserErasedPayload } from '../../identity/index.ts';
import type { UseCaseDeps } from './deps.ts';

/**
 * Tenancy's part of the data rights: its section of a user's export (memberships, API keys they created),
 * the erasure guard (an org must not be left without an owner while others are in it), and the reaction
 * to `identity.user_erased`: the user's memberships go in every org (their keys were already revoked in
 * the erasure transaction, through the disable hook).
 */
export function registerTenancyDataRights({ repo, audit, identity }: Pick<UseCaseDeps, 'repo' | 'audit' | 'identity'>) {
  identity.onDataExport('organizations', async (userId) => {
    const memberships = await repo.membershipsOf(userId);
    const apiKeys = await repo.apiKeysCreatedByAcrossOrgs(userId);
    return { data: { memberships, apiKeysCreated: apiKeys }, orgIds: memberships.map((m) => m.orgId) };
  });

  identity.onErasure(async (userId) => {
    const orgs = await repo.orgsUserSolelyOwnsWithOthers(userId);
    if (orgs.length > 0) {
      throw new AppError('TENANCY.LAST_OWNER', 409, 'The user is the last owner of an organization that has other members; make another member owner first', { orgIds: orgs });
    }
  });

  return (jobs: JobRegistry) => {
    jobs.subscribe<UserErasedPayload>(USER_ERASED, 'tenancy.user_erased', async (event, { trx }) => {
      const t = repo.join(trx);
      const { userId } = event.payload;
      const ctx = systemActor('data-rights', event.requestId ?? null);
      for (const orgId of await repo.orgsOfUser(t, userId)) {
        await setTenant(t, orgId);
        await repo.deleteMembership(t, userId);
        await audit.record(t, { orgId, action: 'member.removed', target: { type: 'user', id: userId }, changes: { reason: 'account_erased' }, context: ctx });
      }
    });
  };
}
