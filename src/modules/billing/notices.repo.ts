import { newId } from '../../platform/ids.ts';
import type { Trx } from './billing.repo.ts';

/**
 * Claims a notice (an e-mail billing sends) for (org, kind, dedupe key) in the caller's transaction:
 * returns the notice id when this call claimed it, null when it was claimed before. The claim commits
 * with whatever sends or publishes the notice, so a rolled-back attempt leaves no claim behind.
 */
export async function claimNotice(trx: Trx, tenantId: string, kind: string, dedupeKey: string, eventId: string | null = null): Promise<string | null> {
  const row = await trx
    .insertInto('billing_notices')
    .values({ tenant_id: tenantId, id: newId(), kind, dedupe_key: dedupeKey, event_id: eventId })
    .onConflict((oc) => oc.columns(['tenant_id', 'kind', 'dedupe_key']).doNothing())
    .returning('id')
    .executeTakeFirst();
  return row?.id ?? null;
}
