import { sql, type Selectable, type Transaction } from 'kysely';
import type { Database, DB, DbScope, TxHandle } from '../../platform/db/database.ts';
import { setTenant } from '../../platform/db/database.ts';
import { GENESIS_HASH, type ChainedFields } from './audit.chain.ts';

/** The tables audit owns: `audit_events` (tenant-owned, RLS) and `audit_chains` (one head per chain). */
export type AuditTables = Pick<DB, 'audit_events' | 'audit_chains'>;
type AuditTx = Transaction<AuditTables>;

/** One stored event, as the repo reads it back (dates as Date, `changes` parsed): the hashed fields + its hashes. */
export interface AuditEventRow extends ChainedFields {
  changes: Record<string, unknown>;
  prevHash: string;
  hash: string;
}

export interface AuditListFilter {
  action?: string;
  actorId?: string;
  targetType?: string;
  targetId?: string;
  from?: Date;
  to?: Date;
  /** Keyset position: events with a lower seq. */
  beforeSeq?: number;
}

function toRow(r: Selectable<AuditTables['audit_events']>): AuditEventRow {
  return {
    tenantId: r.tenant_id,
    id: r.id,
    seq: Number(r.seq),
    occurredAt: new Date(r.occurred_at),
    actorType: r.actor_type,
    actorId: r.actor_id,
    actorUserId: r.actor_user_id ?? null,
    action: r.action,
    targetType: r.target_type,
    targetId: r.target_id,
    requestId: r.request_id ?? null,
    ip: r.ip ?? null,
    changes: (typeof r.changes === 'string' ? JSON.parse(r.changes) : (r.changes ?? {})) as Record<string, unknown>,
    prevHash: r.prev_hash,
    hash: r.hash,
  };
}

/** All SQL of the audit module. */
export function createAuditRepo(db: Database) {
  const scope: DbScope<AuditTables> = db.scope('audit_events', 'audit_chains');
  const { owner } = scope;

  async function readChain(trx: AuditTx, tenantId: string) {
    const rows = await trx.selectFrom('audit_events').selectAll().where('tenant_id', '=', tenantId).orderBy('seq', 'asc').execute();
    const head = await trx.selectFrom('audit_chains').select(['last_seq', 'last_hash']).where('tenant_id', '=', tenantId).executeTakeFirst();
    return { events: rows.map(toRow), head: head ? { lastSeq: Number(head.last_seq), lastHash: head.last_hash } : null };
  }

  return {
    /** Locks the chain head (created at genesis on first use) in the caller's transaction. */
    async lockHead(handle: TxHandle, tenantId: string): Promise<{ lastSeq: number; lastHash: string }> {
      const trx = scope.join(handle);
      await trx
        .insertInto('audit_chains')
        .values({ tenant_id: tenantId, last_seq: 0, last_hash: GENESIS_HASH })
        .onConflict((oc) => oc.column('tenant_id').doNothing())
        .execute();
      const head = await trx
        .selectFrom('audit_chains')
        .select(['last_seq', 'last_hash'])
        .where('tenant_id', '=', tenantId)
        .forUpdate()
        .executeTakeFirstOrThrow();
      return { lastSeq: Number(head.last_seq), lastHash: head.last_hash };
    },

    /** Appends the event and moves the head to it (the head is locked by lockHead). */
    async append(handle: TxHandle, e: AuditEventRow): Promise<void> {
      const trx = scope.join(handle);
      await trx
        .insertInto('audit_events')
        .values({
          tenant_id: e.tenantId,
          id: e.id,
          seq: e.seq,
          occurred_at: e.occurredAt,
          actor_type: e.actorType,
          actor_id: e.actorId,
          actor_user_id: e.actorUserId,
          action: e.action,
          target_type: e.targetType,
          target_id: e.targetId,
          request_id: e.requestId,
          ip: e.ip,
          changes: JSON.stringify(e.changes),
          prev_hash: e.prevHash,
          hash: e.hash,
        })
        .execute();
      await trx
        .updateTable('audit_chains')
        .set({ last_seq: e.seq, last_hash: e.hash, updated_at: sql<Date>`now()` })
        .where('tenant_id', '=', e.tenantId)
        .execute();
    },

    /** Newest first (backed by the (tenant_id, …, seq) indexes); fetches `limit` rows. */
    async list(tenantId: string, f: AuditListFilter, limit: number): Promise<AuditEventRow[]> {
      const rows = await scope.withTenantRead(tenantId, async (trx) => {
        let q = trx.selectFrom('audit_events').selectAll().where('tenant_id', '=', tenantId);
        if (f.action) q = q.where('action', '=', f.action);
        if (f.actorId) q = q.where('actor_id', '=', f.actorId);
        if (f.targetType) q = q.where('target_type', '=', f.targetType);
        if (f.targetId) q = q.where('target_id', '=', f.targetId);
        if (f.from) q = q.where('occurred_at', '>=', f.from);
        if (f.to) q = q.where('occurred_at', '<', f.to);
        if (f.beforeSeq !== undefined) q = q.where('seq', '<', f.beforeSeq);
        return q.orderBy('seq', 'desc').limit(limit).execute();
      });
      return rows.map(toRow);
    },

    /** One chain's events (oldest first) and head, read as the owner role in the chain's tenant context. */
    async readChainAsOwner(tenantId: string) {
      return owner.transaction().execute(async (trx) => {
        await setTenant(trx, tenantId);
        return readChain(trx, tenantId);
      });
    },

    /** Every chain that has a head (all orgs plus the platform chain), as the owner role. */
    async chainIdsAsOwner(): Promise<string[]> {
      const heads = await owner.selectFrom('audit_chains').select('tenant_id').orderBy('tenant_id').execute();
      return heads.map((h) => h.tenant_id);
    },
  };
}

export type AuditRepo = ReturnType<typeof createAuditRepo>;
