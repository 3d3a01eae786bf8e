import { sql, type Kysely, type Selectable } from 'kysely';
import type { Database, DB, DbScope, TxHandle } from '../../platform/db/database.ts';
import { setTenant } from '../../platform/db/database.ts';
import { newId } from '../../platform/ids.ts';
import { GENESIS_HASH, type ChainedFields } from './audit.chain.ts';

/** The tables audit owns: `audit_events` (tenant-owned, RLS) and `audit_chains` (one head per chain). */
export type AuditTables = Pick<DB, 'audit_events' | 'audit_chains' | 'audit_personal_data'>;

/** What a write appends: the event's content, without its place in the chain (the sequencer's job). */
export type PendingFields = Omit<ChainedFields, 'seq'>;

/** A pending event's `audit_events` columns (seq, prev_hash and hash are set when it is sequenced). */
export function pendingColumns(e: PendingFields) {
  return {
    tenant_id: e.tenantId,
    id: e.id,
    occurred_at: e.occurredAt,
    actor_type: e.actorType,
    actor_id: e.actorId,
    actor_user_id: e.actorUserId,
    action: e.action,
    target_type: e.targetType,
    target_id: e.targetId,
    request_id: e.requestId,
    ip: e.ip,
    changes: e.changes,
    pd_ref: e.pdRef,
  };
}

/** One data subject's personal values of one event (kept out of the hash, erasable). */
export interface PersonalRecord {
  /** `user:<uuid>`, `email:<sha256>`, or null (nobody identifiable). */
  subject: string | null;
  data: Record<string, unknown>;
}

/** A stored personal-data row, as read back: `data` is `{}` and `erasedAt` set once its subject was erased. */
export interface PersonalRow {
  tenantId: string;
  ref: string;
  subject: string | null;
  data: Record<string, unknown>;
  erasedAt: Date | null;
}

/**
 * One stored event, as the repo reads it back (dates as Date, `changes` parsed). `seq`, `prevHash` and
 * `hash` are null while the event is pending (committed, not yet sequenced); `pos` orders pending events.
 */
export interface AuditEventRow extends PendingFields {
  seq: number | null;
  pos: number | null;
  changes: Record<string, unknown>;
  prevHash: string | null;
  hash: string | null;
}

/** A sequenced event (seq, prevHash and hash set). */
export type SequencedRow = AuditEventRow & { seq: number; prevHash: string; hash: string };

export interface AuditListFilter {
  action?: string;
  actorId?: string;
  targetType?: string;
  targetId?: string;
  from?: Date;
  to?: Date;
  /** Include pending events (listed first, newest first by pos); default true. */
  pending?: boolean;
  /** Keyset position: after a pending event (pos) or after a sequenced one (seq). */
  after?: { pos: number } | { seq: number };
}

export interface Backlog {
  /** Committed events not yet sequenced. */
  pending: number;
  /** Age of the oldest of them (from its occurred_at); 0 when none. */
  oldestAgeSeconds: number;
}

const parseJson = (v: unknown) => (typeof v === 'string' ? JSON.parse(v) : (v ?? {})) as Record<string, unknown>;

function toPersonal(r: Selectable<AuditTables['audit_personal_data']>): PersonalRow {
  return { tenantId: r.tenant_id, ref: r.ref, subject: r.subject, data: parseJson(r.data), erasedAt: r.erased_at === null ? null : new Date(r.erased_at) };
}

function toRow(r: Selectable<AuditTables['audit_events']>): AuditEventRow {
  return {
    tenantId: r.tenant_id,
    id: r.id,
    seq: r.seq === null ? null : Number(r.seq),
    pos: r.pos === null ? null : Number(r.pos),
    occurredAt: new Date(r.occurred_at),
    actorType: r.actor_type,
    actorId: r.actor_id,
    actorUserId: r.actor_user_id ?? null,
    action: r.action,
    targetType: r.target_type,
    targetId: r.target_id,
    requestId: r.request_id ?? null,
    ip: r.ip ?? null,
    changes: parseJson(r.changes),
    pdRef: r.pd_ref ?? null,
    prevHash: r.prev_hash,
    hash: r.hash,
  };
}

/** Names the data subjects whose personal data this transaction may read and erase in every org (migration 0075). */
async function nameSubjects(trx: Kysely<AuditTables>, subjects: string[]): Promise<void> {
  if (subjects.some((k) => k.includes(','))) throw new Error('audit: invalid data subject key');
  await sql`select set_config('app.data_subjects', ${subjects.join(',')}, true)`.execute(trx);
}

/** Rows the verifier reads per round trip (the whole chain is never held in memory at once). */
const VERIFY_PAGE = 5_000;

/** All SQL of the audit module. */
export function createAuditRepo(db: Database) {
  const scope: DbScope<AuditTables> = db.scope('audit_events', 'audit_chains', 'audit_personal_data');
  const { owner } = scope;

  async function backlogOf(trx: Kysely<AuditTables>, tenantId?: string): Promise<Backlog> {
    let q = trx
      .selectFrom('audit_events')
      .select([sql<number>`count(*)::int`.as('pending'), sql<number | string | null>`extract(epoch from now() - min(occurred_at))`.as('age')])
      .where('seq', 'is', null);
    if (tenantId) q = q.where('tenant_id', '=', tenantId);
    const row = await q.executeTakeFirstOrThrow();
    return { pending: row.pending, oldestAgeSeconds: Math.max(0, Number(row.age ?? 0)) };
  }

  /** A chain's sequenced events after a seq, oldest first. */
  function chainPage(trx: Kysely<AuditTables>, tenantId: string, afterSeq: number, limit: number) {
    return trx.selectFrom('audit_events').selectAll().where('tenant_id', '=', tenantId).where('seq', '>', afterSeq).orderBy('seq', 'asc').limit(limit).execute();
  }

  return {
    /**
     * Appends a pending event in the caller's transaction: one statement (its personal data, when any, in a
     * data-modifying CTE of the same INSERT: one round trip), no lock on any shared row (the chain head is the
     * sequencer's alone), so concurrent writes of one org never wait for each other.
     */
    async appendPending(handle: TxHandle, e: PendingFields, personal: PersonalRecord[] = []): Promise<void> {
      const trx = scope.join(handle);
      const event = { ...pendingColumns(e), changes: JSON.stringify(e.changes) };
      if (personal.length === 0) {
        await trx.insertInto('audit_events').values(event).execute();
        return;
      }
      if (!e.pdRef) throw new Error('audit: personal data needs a reference');
      const rows = personal.map((p) => ({ tenant_id: e.tenantId, id: newId(), ref: e.pdRef!, subject: p.subject, data: JSON.stringify(p.data) }));
      // Postgres runs a data-modifying CTE to completion whether or not the statement reads it.
      await trx
        .with('personal', (q) => q.insertInto('audit_personal_data').values(rows))
        .insertInto('audit_events')
        .values(event)
        .execute();
    },

    /** The personal-data rows of some events of one org (in the caller's tenant transaction or a read one). */
    async personalOf(tenantId: string, refs: string[]): Promise<PersonalRow[]> {
      if (refs.length === 0) return [];
      const rows = await scope.withTenantRead(tenantId, (trx) =>
        trx.selectFrom('audit_personal_data').selectAll().where('tenant_id', '=', tenantId).where('ref', 'in', refs).execute(),
      );
      return rows.map(toPersonal);
    },

    /**
     * Erasure, in the caller's transaction (any tenant context): blanks the data of every row about one of
     * the subjects, in every org (policy audit_personal_data_subject_erase), and forgets the subject. The
     * events and their references stay.
     */
    async eraseSubjects(handle: TxHandle, subjects: string[]): Promise<number> {
      if (subjects.length === 0) return 0;
      const trx = scope.join(handle);
      await nameSubjects(trx, subjects);
      const r = await trx
        .updateTable('audit_personal_data')
        .set({ data: JSON.stringify({}), subject: null, erased_at: sql<Date>`now()` })
        .where('subject', 'in', subjects)
        .executeTakeFirst();
      return Number(r.numUpdatedRows);
    },

    /**
     * A data subject's audit trail, in one app-role transaction: the orgs holding personal data about the
     * subjects (policy audit_personal_data_subject_read) besides `tenantIds`, then per org (its tenant
     * context) the events the user did or that are about them, and the subjects' personal data; oldest
     * first, at most `limit` events in all (`truncated` when there were more).
     */
    async subjectEvents(tenantIds: string[], userId: string, subjects: string[], limit: number) {
      return scope.app.transaction().execute(async (trx) => {
        await nameSubjects(trx, subjects);
        const found = await trx.selectFrom('audit_personal_data').select('tenant_id').distinct().where('subject', 'in', subjects).execute();
        const tenants = [...new Set([...tenantIds, ...found.map((r) => r.tenant_id)])];
        const events: AuditEventRow[] = [];
        const personal: PersonalRow[] = [];
        let truncated = false;
        for (const tenantId of tenants) {
          const left = limit - events.length;
          if (left <= 0) {
            truncated = true;
            break;
          }
          await setTenant(trx, tenantId);
          const refs = trx.selectFrom('audit_personal_data').select('ref').where('tenant_id', '=', tenantId).where('subject', 'in', subjects);
          const rows = await trx
            .selectFrom('audit_events')
            .selectAll()
            .where('tenant_id', '=', tenantId)
            .where((w) => w.or([w('actor_user_id', '=', userId), w.and([w('target_type', '=', 'user'), w('target_id', '=', userId)]), w('pd_ref', 'in', refs)]))
            .orderBy('occurred_at')
            .orderBy('id')
            .limit(left + 1)
            .execute();
          if (rows.length > left) truncated = true;
          const kept = rows.slice(0, left);
          events.push(...kept.map(toRow));
          const pdRefs = [...new Set(kept.map((e) => e.pd_ref).filter((r): r is string => r !== null))];
          if (pdRefs.length > 0) {
            const pd = await trx.selectFrom('audit_personal_data').selectAll().where('tenant_id', '=', tenantId).where('ref', 'in', pdRefs).where('subject', 'in', subjects).execute();
            personal.push(...pd.map(toPersonal));
          }
        }
        return { events, personal, truncated };
      });
    },

    /**
     * Newest first: pending events (by pos, when included) before sequenced ones (by seq). Two indexed
     * queries in one read transaction: the pending partial index, then the (tenant_id, …, seq) indexes.
     */
    async list(tenantId: string, f: AuditListFilter, limit: number): Promise<AuditEventRow[]> {
      const rows = await scope.withTenantRead(tenantId, async (trx) => {
        const base = () => {
          let q = trx.selectFrom('audit_events').selectAll().where('tenant_id', '=', tenantId);
          if (f.action) q = q.where('action', '=', f.action);
          if (f.actorId) q = q.where('actor_id', '=', f.actorId);
          if (f.targetType) q = q.where('target_type', '=', f.targetType);
          if (f.targetId) q = q.where('target_id', '=', f.targetId);
          if (f.from) q = q.where('occurred_at', '>=', f.from);
          if (f.to) q = q.where('occurred_at', '<', f.to);
          return q;
        };
        const after = f.after;
        const out: Selectable<AuditTables['audit_events']>[] = [];
        if (f.pending !== false && (after === undefined || 'pos' in after)) {
          let q = base().where('seq', 'is', null);
          if (after) q = q.where('pos', '<', after.pos);
          out.push(...(await q.orderBy('pos', 'desc').limit(limit).execute()));
        }
        if (out.length < limit) {
          let q = base().where('seq', 'is not', null);
          if (after && 'seq' in after) q = q.where('seq', '<', after.seq);
          out.push(...(await q.orderBy('seq', 'desc').limit(limit - out.length).execute()));
        }
        return out;
      });
      return rows.map(toRow);
    },

    /**
     * One sequencer round for one or many chains in one owner transaction (five round trips for the lot): locks
     * the heads it can (`FOR UPDATE SKIP LOCKED`, in tenant order: a chain another sequencer holds is skipped,
     * never forked), creates the missing ones, reads up to `max` pending events it can see (committed ones) per
     * locked chain in pos order (policy audit_sequencer_pending: no tenant context needed to read them), lets
     * `chain` link each from its head, and writes every chain's links and head through `audit_sequencer_link`
     * (migration 0157: each chain's UPDATE in its own tenant context, under RLS). `onSequenced` then runs per
     * chain in the same transaction (streaming: the outbox, a table without RLS). Returns how many events each
     * locked chain had sequenced (chains it skipped are absent).
     */
    async sequenceChains(
      tenantIds: string[],
      max: number,
      chain: (head: { lastSeq: number; lastHash: string }, pending: AuditEventRow[]) => SequencedRow[],
      onSequenced?: (trx: TxHandle, tenantId: string, sequenced: SequencedRow[]) => Promise<void>,
    ): Promise<Map<string, number>> {
      const done = new Map<string, number>();
      if (tenantIds.length === 0) return done;
      const ids = [...new Set(tenantIds)].sort();
      return owner.transaction().execute(async (trx) => {
        const heads = new Map<string, { lastSeq: number; lastHash: string }>();
        const locked = await sql<{ tenant_id: string; last_seq: string; last_hash: string }>`
          select tenant_id, last_seq, last_hash from audit_chains where tenant_id = any(${ids}::uuid[])
          order by tenant_id for update skip locked`.execute(trx);
        for (const h of locked.rows) heads.set(h.tenant_id, { lastSeq: Number(h.last_seq), lastHash: h.last_hash });
        const missing = ids.filter((id) => !heads.has(id));
        if (missing.length > 0) {
          // A head that exists but is held by another sequencer conflicts and is not returned: skipped.
          const created = await sql<{ tenant_id: string; last_seq: string; last_hash: string }>`
            insert into audit_chains (tenant_id, last_seq, last_hash)
            select t, 0, ${GENESIS_HASH} from unnest(${missing}::uuid[]) as t order by t
            on conflict (tenant_id) do nothing
            returning tenant_id, last_seq, last_hash`.execute(trx);
          for (const h of created.rows) heads.set(h.tenant_id, { lastSeq: Number(h.last_seq), lastHash: h.last_hash });
        }
        if (heads.size === 0) return done;
        for (const id of heads.keys()) done.set(id, 0);
        const pending = await sql<Selectable<AuditTables['audit_events']>>`
          select * from (
            select e.*, row_number() over (partition by e.tenant_id order by e.pos) as rn
            from audit_events e where e.seq is null and e.tenant_id = any(${[...heads.keys()]}::uuid[])
          ) p where p.rn <= ${max} order by p.tenant_id, p.pos`.execute(trx);
        const byChain = new Map<string, AuditEventRow[]>();
        for (const r of pending.rows) {
          const list = byChain.get(r.tenant_id) ?? [];
          list.push(toRow(r));
          byChain.set(r.tenant_id, list);
        }
        const links: Array<{ t: string; last_seq: number; last_hash: string; rows: Array<{ id: string; seq: number; prev_hash: string; hash: string }> }> = [];
        const sequencedByChain = new Map<string, SequencedRow[]>();
        for (const [tenantId, rows] of byChain) {
          const sequenced = chain(heads.get(tenantId)!, rows);
          const last = sequenced[sequenced.length - 1]!;
          links.push({ t: tenantId, last_seq: last.seq, last_hash: last.hash, rows: sequenced.map((e) => ({ id: e.id, seq: e.seq, prev_hash: e.prevHash, hash: e.hash })) });
          sequencedByChain.set(tenantId, sequenced);
          done.set(tenantId, sequenced.length);
        }
        if (links.length > 0) await sql`select audit_sequencer_link(${JSON.stringify(links)}::jsonb)`.execute(trx);
        if (onSequenced) for (const [tenantId, sequenced] of sequencedByChain) await onSequenced(trx, tenantId, sequenced);
        return done;
      });
    },

    /** Chains with committed pending events, as the owner (policy audit_sequencer_pending). */
    async chainsWithBacklogAsOwner(): Promise<string[]> {
      const rows = await owner.selectFrom('audit_events').select('tenant_id').distinct().where('seq', 'is', null).execute();
      return rows.map((r) => r.tenant_id);
    },

    /**
     * Reads one chain for the verifier as the owner, in one REPEATABLE READ snapshot (a sequencer
     * committing meanwhile cannot make the head and the events disagree): the sequenced events in seq
     * order, page by page to `onPage`, then the head and the pending backlog.
     */
    async readChainAsOwner(tenantId: string, onPage: (events: SequencedRow[]) => void) {
      return owner
        .transaction()
        .setIsolationLevel('repeatable read')
        .execute(async (trx) => {
          await setTenant(trx, tenantId);
          let afterSeq = 0;
          for (;;) {
            const rows = await chainPage(trx, tenantId, afterSeq, VERIFY_PAGE);
            if (rows.length === 0) break;
            onPage(rows.map(toRow) as SequencedRow[]);
            afterSeq = Number(rows[rows.length - 1]!.seq);
            if (rows.length < VERIFY_PAGE) break;
          }
          const head = await trx.selectFrom('audit_chains').select(['last_seq', 'last_hash']).where('tenant_id', '=', tenantId).executeTakeFirst();
          return {
            head: head ? { lastSeq: Number(head.last_seq), lastHash: head.last_hash } : null,
            backlog: await backlogOf(trx, tenantId),
          };
        });
    },

    /** Every chain that has a head or a backlog (all orgs plus the platform chain), as the owner role. */
    async chainIdsAsOwner(): Promise<string[]> {
      const heads = await owner
        .selectFrom('audit_chains')
        .select('tenant_id')
        .union(owner.selectFrom('audit_events').select('tenant_id').where('seq', 'is', null))
        .orderBy('tenant_id')
        .execute();
      return heads.map((h) => h.tenant_id);
    },

    /** The backlog of every chain together (metrics), as the owner role. */
    async backlogAsOwner(): Promise<Backlog> {
      return backlogOf(owner);
    },
  };
}

export type AuditRepo = ReturnType<typeof createAuditRepo>;
