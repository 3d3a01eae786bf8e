import type { TxHandle } from '../../platform/db/database.ts';
import type { Actor, ActorContext } from '../../platform/http/actor.ts';
import { decodeCursor, listFingerprint, toPage } from '../../platform/http/pagination.ts';
import { newId } from '../../platform/ids.ts';
import { eventHash, GENESIS_HASH, type ChainedFields } from './audit.chain.ts';
import type { AuditEventRow, AuditListFilter, AuditRepo, Backlog, SequencedRow } from './audit.repo.ts';

/**
 * Events that belong to no org (signup of a user, login, password change, platform-admin actions) go to
 * this chain, so they are just as tamper-evident as the per-org ones.
 */
export const PLATFORM_AUDIT_TENANT = '00000000-0000-0000-0000-000000000000';

export interface AuditEventInput {
  /** The org whose chain records it; the transaction must run in this tenant's context. */
  orgId: string;
  action: string;
  target: { type: string; id: string };
  /** Changed fields, e.g. `{ role: { from: 'member', to: 'admin' } }`. Never secrets. */
  changes?: Record<string, unknown>;
  /** Who did it and from where: `actorOf(request)` / `tenantActorOf(request)` / `systemActor(id)` (platform/http/actor.ts). */
  context: ActorContext;
}

export interface AuditEvent {
  id: string;
  /** null while pending (committed, not yet sequenced into the chain). */
  seq: number | null;
  occurredAt: Date;
  actor: Actor;
  action: string;
  target: { type: string; id: string };
  requestId: string | null;
  ip: string | null;
  changes: Record<string, unknown>;
  /** null while pending. */
  prevHash: string | null;
  /** null while pending. */
  hash: string | null;
}

/** An org's list query: the repo's filter, with an opaque cursor instead of the keyset position. */
export interface AuditFilter extends Omit<AuditListFilter, 'after'> {
  cursor?: string;
  limit: number;
}

export interface ChainReport {
  orgId: string;
  /** The sequenced part is intact (every link, hash, seq and the head). */
  ok: boolean;
  /** Sequenced events checked. */
  events: number;
  problems: string[];
  /** Committed events not yet sequenced (not covered by the check), and the oldest one's age. */
  backlog: Backlog;
}

/** Pending events one sequencer round takes per chain (one transaction). */
export const SEQUENCE_BATCH = 500;

const toEvent = (r: AuditEventRow): AuditEvent => ({
  id: r.id,
  seq: r.seq,
  occurredAt: r.occurredAt,
  // actor_type is only ever written from an Actor (text column, values checked on the way in).
  actor: { type: r.actorType as Actor['type'], id: r.actorId, userId: r.actorUserId },
  action: r.action,
  target: { type: r.targetType, id: r.targetId },
  requestId: r.requestId,
  ip: r.ip,
  changes: r.changes,
  prevHash: r.prevHash,
  hash: r.hash,
});

const chained = (r: AuditEventRow, seq: number): ChainedFields => ({
  tenantId: r.tenantId,
  id: r.id,
  seq,
  occurredAt: r.occurredAt,
  actorType: r.actorType,
  actorId: r.actorId,
  actorUserId: r.actorUserId,
  action: r.action,
  targetType: r.targetType,
  targetId: r.targetId,
  requestId: r.requestId,
  ip: r.ip,
  changes: r.changes,
});

/** Links pending events onto a head, in the order given: seq = last + 1, …, each hash over the previous. */
function link(head: { lastSeq: number; lastHash: string }, pending: AuditEventRow[]): SequencedRow[] {
  let prevHash = head.lastHash;
  return pending.map((r, i) => {
    const seq = head.lastSeq + 1 + i;
    const hash = eventHash(prevHash, chained(r, seq));
    const out = { ...r, seq, prevHash, hash };
    prevHash = hash;
    return out;
  });
}

/** A keyset position is [null, seq] after a sequenced event (the format before pending events existed) or ['p', pos]. */
const validPosition = ([kind, n]: [unknown, unknown]) => (kind === null || kind === 'p') && typeof n === 'number' && Number.isSafeInteger(n) && n > 0;

export function createAuditService(repo: AuditRepo) {
  /**
   * Recomputes one chain's sequenced part as the owner (operator tool): every link, every hash, seq
   * contiguity, and the head, so an edited, inserted, reordered or deleted row (including the newest) is
   * reported. Pending events are not part of the chain yet: they are counted as the backlog.
   */
  async function verifyChain(orgId: string): Promise<ChainReport> {
    const problems: string[] = [];
    let prevHash = GENESIS_HASH;
    let expectedSeq = 1;
    let count = 0;
    const { head, backlog } = await repo.readChainAsOwner(orgId, (page) => {
      for (const r of page) {
        const seq = r.seq;
        if (seq !== expectedSeq) problems.push(`seq ${seq}: expected seq ${expectedSeq} (a row is missing or was inserted)`);
        if (r.prevHash !== prevHash) problems.push(`seq ${seq}: prev_hash does not match the previous event's hash`);
        if (eventHash(r.prevHash, { ...chained(r, seq), tenantId: orgId }) !== r.hash) problems.push(`seq ${seq}: content does not match its hash (edited)`);
        prevHash = r.hash;
        expectedSeq = seq + 1;
        count++;
      }
    });
    const lastSeq = expectedSeq - 1;
    if (!head) {
      if (count > 0) problems.push('the chain head is missing');
    } else if (head.lastSeq !== lastSeq) {
      problems.push(`head says seq ${head.lastSeq} but the last event is seq ${lastSeq} (events deleted)`);
    } else if (head.lastHash !== prevHash) {
      problems.push('head hash does not match the last event');
    }
    return { orgId, ok: problems.length === 0, events: count, problems, backlog };
  }

  /** Sequences one chain until its visible backlog is empty (or maxRounds batches were taken). */
  async function sequenceChain(orgId: string, maxRounds = 20): Promise<number> {
    let total = 0;
    for (let round = 0; round < maxRounds; round++) {
      const n = await repo.sequenceChain(orgId, SEQUENCE_BATCH, link);
      total += n;
      if (n < SEQUENCE_BATCH) break;
    }
    return total;
  }

  return {
    /**
     * Appends one pending event inside the caller's transaction (so it commits or rolls back with the
     * change it records). No shared row is locked: the sequencer chains it after it commits.
     */
    async record(trx: TxHandle, input: AuditEventInput): Promise<{ id: string }> {
      const { actor, requestId, ip } = input.context;
      const id = newId();
      await repo.appendPending(trx, {
        tenantId: input.orgId,
        id,
        occurredAt: new Date(),
        actorType: actor.type,
        actorId: actor.id,
        actorUserId: actor.userId ?? null,
        action: input.action,
        targetType: input.target.type,
        targetId: input.target.id,
        requestId: requestId ?? null,
        ip: ip ?? null,
        changes: input.changes ?? {},
      });
      return { id };
    },

    /**
     * Newest first: pending events (seq null) first unless `pending: false`, then sequenced ones by seq;
     * keyset-paginated, the cursor bound to the filters (reused with others: 400).
     */
    async list(orgId: string, f: AuditFilter): Promise<{ data: AuditEvent[]; nextCursor: string | null }> {
      const pending = f.pending !== false;
      const fingerprint = listFingerprint({
        list: 'audit-events',
        action: f.action,
        actorId: f.actorId,
        targetType: f.targetType,
        targetId: f.targetId,
        from: f.from?.toISOString(),
        to: f.to?.toISOString(),
        ...(pending ? {} : { pending: false }),
      });
      let after: AuditListFilter['after'];
      if (f.cursor) {
        const [kind, n] = decodeCursor(f.cursor, fingerprint, validPosition) as [null | 'p', number];
        after = kind === 'p' ? { pos: n } : { seq: n };
      }
      const rows = await repo.list(orgId, { ...f, pending, after }, f.limit + 1);
      const page = toPage(rows, f.limit, fingerprint, (r) => (r.seq === null ? ['p', r.pos!] : [null, r.seq]));
      return { data: page.data.map(toEvent), nextCursor: page.nextCursor };
    },

    verifyChain,

    /** Every chain that has a head or a backlog (all orgs plus the platform chain). */
    async verifyAllChains(): Promise<ChainReport[]> {
      const reports: ChainReport[] = [];
      for (const id of await repo.chainIdsAsOwner()) reports.push(await verifyChain(id));
      return reports;
    },

    /**
     * The sequencer: chains every committed pending event of every chain (or of one), in the order it
     * can see them commit (see README, "Sequencing"). Safe to run in several workers at once: each chain
     * is sequenced under its head's row lock and a chain held by another run is skipped.
     */
    async sequence(orgId?: string): Promise<{ chains: number; sequenced: number }> {
      const ids = orgId ? [orgId] : await repo.chainsWithBacklogAsOwner();
      let sequenced = 0;
      for (const id of ids) sequenced += await sequenceChain(id);
      return { chains: ids.length, sequenced };
    },

    /** Every chain's pending events together (metrics). */
    backlog: (): Promise<Backlog> => repo.backlogAsOwner(),
  };
}

export type AuditService = ReturnType<typeof createAuditService>;
