import type { Database, DB, DbScope, TxHandle } from '../../platform/db/database.ts';

/** org_deletions: one row per org whose deletion was requested (a tombstone once purged). Not tenant-owned. */
export type OrgDeletionTables = Pick<DB, 'org_deletions'>;

export interface OrgDeletion {
  orgId: string;
  requestedBy: string | null;
  requestedAt: Date;
  purgeAfter: Date;
}

export function createOrgDeletionsRepo(db: Database) {
  const scope: DbScope<OrgDeletionTables> = db.scope('org_deletions');
  const pending = () => scope.app.selectFrom('org_deletions').select(['org_id', 'requested_by', 'requested_at', 'purge_after']).where('cancelled_at', 'is', null).where('purged_at', 'is', null);
  const toDeletion = (r: { org_id: string; requested_by: string | null; requested_at: Date | string; purge_after: Date | string }): OrgDeletion => ({
    orgId: r.org_id,
    requestedBy: r.requested_by,
    requestedAt: new Date(r.requested_at),
    purgeAfter: new Date(r.purge_after),
  });
  return {
    /** In the caller's transaction; a cancelled request is scheduled again, a pending one is left as it is. */
    async schedule(handle: TxHandle, orgId: string, requestedBy: string | null, purgeAfter: Date): Promise<void> {
      await scope
        .join(handle)
        .insertInto('org_deletions')
        .values({ org_id: orgId, requested_by: requestedBy, purge_after: purgeAfter })
        .onConflict((oc) => oc.column('org_id').doUpdateSet({ requested_by: requestedBy, requested_at: new Date(), purge_after: purgeAfter, cancelled_at: null }).where('org_deletions.cancelled_at', 'is not', null))
        .execute();
    },
    async cancel(handle: TxHandle, orgId: string): Promise<boolean> {
      const r = await scope.join(handle).updateTable('org_deletions').set({ cancelled_at: new Date() }).where('org_id', '=', orgId).where('cancelled_at', 'is', null).where('purged_at', 'is', null).executeTakeFirst();
      return Number(r.numUpdatedRows) > 0;
    },
    async pendingFor(orgId: string): Promise<OrgDeletion | null> {
      const row = await pending().where('org_id', '=', orgId).executeTakeFirst();
      return row ? toDeletion(row) : null;
    },
    async due(now: Date, limit: number): Promise<OrgDeletion[]> {
      return (await pending().where('purge_after', '<=', now).orderBy('purge_after').limit(limit).execute()).map(toDeletion);
    },
    async markPurged(orgId: string, rowsDeleted: number): Promise<void> {
      await scope.app.updateTable('org_deletions').set({ purged_at: new Date(), rows_deleted: rowsDeleted }).where('org_id', '=', orgId).execute();
    },
  };
}

export type OrgDeletionsRepo = ReturnType<typeof createOrgDeletionsRepo>;
