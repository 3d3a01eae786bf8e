import { setTenant, type TxHandle } from '../../../platform/db/database.ts';
import type { ActorContext } from '../../../platform/http/actor.ts';
import type { UseCaseDeps } from './deps.ts';

/**
 * API keys act for the member who created them. When that member leaves an org (manage-members.ts) or
 * their account is disabled (this hook, registered with identity), their keys are revoked for good
 * (revoked_at set), so re-inviting or re-enabling the person never brings an old key back.
 */
export function revokeKeysOnDisable({ repo, audit }: Pick<UseCaseDeps, 'repo' | 'audit'>) {
  /** In identity's disabling transaction: the user's keys in every org, audited in each. */
  return async (handle: TxHandle, userId: string, ctx: ActorContext): Promise<void> => {
    const trx = repo.join(handle);
    const previous = await repo.currentTenant(trx);
    for (const orgId of await repo.orgsOfUser(trx, userId)) {
      await setTenant(trx, orgId);
      const revoked = await repo.revokeKeysCreatedBy(trx, userId);
      if (revoked > 0) {
        await audit.record(trx, { orgId, action: 'api_key.revoked_creator_disabled', target: { type: 'user', id: userId }, changes: { apiKeysRevoked: revoked }, context: ctx });
      }
    }
    if (previous) await setTenant(trx, previous);
  };
}
