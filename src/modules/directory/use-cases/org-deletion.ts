import type { Database } from '../../../platform/db/database.ts';
import { purgeTenant } from '../../../platform/db/tenant-purge.ts';
import { AppError } from '../../../platform/http/errors.ts';
import { systemActor, type ActorContext } from '../../../platform/http/actor.ts';
import { PLATFORM_AUDIT_TENANT, type Audit } from '../../audit/index.ts';
import type { OrgDeletion, OrgDeletionsRepo } from '../org-deletions.repo.ts';

/** How long a deletion can be cancelled before the org's rows are hard-deleted. */
export const ORG_DELETION_GRACE_MS = 30 * 24 * 3_600_000;
const PURGES_PER_RUN = 10;

const noDeletion = () => new AppError('DIRECTORY.ORG_DELETION_NOT_FOUND', 404, 'No deletion is scheduled for this organization');

/**
 * Org deletion: an owner schedules it (audited in the org's chain), may cancel it during the grace
 * period, then a worker schedule hard-deletes every row of the org in every distributed table
 * (platform/db/tenant-purge.ts, driven by the placement map) and records `org.purged` in the platform chain.
 */
export function orgDeletion(deps: { db: Database; audit: Audit; deletions: OrgDeletionsRepo }) {
  const { db, audit, deletions } = deps;
  return {
    async schedule(orgId: string, ctx: ActorContext): Promise<OrgDeletion> {
      const purgeAfter = new Date(Date.now() + ORG_DELETION_GRACE_MS);
      await db.withTenant(orgId, async (trx) => {
        await deletions.schedule(trx, orgId, ctx.actor.userId, purgeAfter);
        await audit.record(trx, { orgId, action: 'org.deletion_scheduled', target: { type: 'organization', id: orgId }, changes: { purgeAfter: purgeAfter.toISOString() }, context: ctx });
      });
      return (await deletions.pendingFor(orgId))!;
    },

    async cancel(orgId: string, ctx: ActorContext): Promise<void> {
      await db.withTenant(orgId, async (trx) => {
        if (!(await deletions.cancel(trx, orgId))) throw noDeletion();
        await audit.record(trx, { orgId, action: 'org.deletion_cancelled', target: { type: 'organization', id: orgId }, context: ctx });
      });
    },

    async get(orgId: string): Promise<OrgDeletion> {
      const d = await deletions.pendingFor(orgId);
      if (!d) throw noDeletion();
      return d;
    },

    /** The worker schedule: purges the orgs whose grace period ended by `now`. */
    async purgeDue(now = new Date()): Promise<Array<{ orgId: string; rowsDeleted: number }>> {
      const out: Array<{ orgId: string; rowsDeleted: number }> = [];
      for (const d of await deletions.due(now, PURGES_PER_RUN)) {
        const perTable = await purgeTenant(db.owner, d.orgId);
        const rowsDeleted = Object.values(perTable).reduce((a, b) => a + b, 0);
        await db.withTenant(PLATFORM_AUDIT_TENANT, (trx) =>
          audit.record(trx, { orgId: PLATFORM_AUDIT_TENANT, action: 'org.purged', target: { type: 'organization', id: d.orgId }, changes: { rowsDeleted, requestedAt: d.requestedAt.toISOString() }, context: systemActor('directory.org_purge') }),
        );
        await deletions.markPurged(d.orgId, rowsDeleted);
        out.push({ orgId: d.orgId, rowsDeleted });
      }
      return out;
    },
  };
}

export type OrgDeletionUseCases = ReturnType<typeof orgDeletion>;
