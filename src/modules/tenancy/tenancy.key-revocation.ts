import { sql, type Transaction } from 'kysely';
import { setTenant } from '../../platform/db/database.ts';
import type { Audit, AuditContext } from '../audit/index.ts';

/**
 * API keys act for the member who created them. When that member leaves an org, or their account is
 * disabled, their keys are revoked for good (revoked_at set), so re-inviting or re-enabling the person
 * never brings an old key back; they create new ones.
 */

/** Revokes the live keys `userId` created in the org of the transaction's tenant context. */
export async function revokeKeysCreatedBy(trx: Transaction<any>, userId: string): Promise<number> {
  const rows = await trx
    .updateTable('api_keys')
    .set({ revoked_at: new Date() })
    .where('created_by', '=', userId)
    .where('revoked_at', 'is', null)
    .returning('id')
    .execute();
  return rows.length;
}

/**
 * For identity's disable hook: in the disabling transaction, revokes the user's keys in every org they
 * belong to (audited in each), then puts the transaction's tenant context back.
 */
export function revokeKeysOnDisable(audit: Audit) {
  return async (trx: Transaction<any>, userId: string, ctx: AuditContext): Promise<void> => {
    const { rows } = await sql<{ tenant: string | null }>`select nullif(current_setting('app.tenant_id', true), '') as tenant`.execute(trx);
    const previous = rows[0]?.tenant ?? null;
    // The member_self_read policy lists a user's own memberships across orgs.
    await sql`select set_config('app.user_id', ${userId}, true)`.execute(trx);
    const orgs = await trx.selectFrom('memberships').select('tenant_id').where('user_id', '=', userId).execute();
    for (const { tenant_id: orgId } of orgs) {
      await setTenant(trx, orgId as string);
      const revoked = await revokeKeysCreatedBy(trx, userId);
      if (revoked > 0) {
        await audit.record(trx, { orgId, action: 'api_key.revoked_creator_disabled', target: { type: 'user', id: userId }, changes: { apiKeysRevoked: revoked }, context: ctx });
      }
    }
    if (previous) await setTenant(trx, previous);
  };
}
