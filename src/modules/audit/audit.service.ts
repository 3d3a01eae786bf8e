import type { TxHandle } from '../../platform/db/database.ts';
import type { Actor, ActorContext } from '../../platform/http/actor.ts';
import { decodeCursor, listFingerprint, toPage } from '../../platform/http/pagination.ts';
import { newId } from '../../platform/ids.ts';
import { eventHash, GENESIS_HASH, type ChainedFields } from './audit.chain.ts';
import type { AuditEventRow, AuditListFilter, AuditRepo } from './audit.repo.ts';

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
  seq: number;
  occurredAt: Date;
  actor: Actor;
  action: string;
  target: { type: string; id: string };
  requestId: string | null;
  ip: string | null;
  changes: Record<string, unknown>;
  prevHash: string;
  hash: string;
}

/** An org's list query: the repo's filter, with an opaque cursor instead of the keyset position. */
export interface AuditFilter extends Omit<AuditListFilter, 'beforeSeq'> {
  cursor?: string;
  limit: number;
}

export interface ChainReport {
  orgId: string;
  ok: boolean;
  events: number;
  problems: string[];
}

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

const chained = (r: AuditEventRow): ChainedFields => ({
  tenantId: r.tenantId,
  id: r.id,
  seq: r.seq,
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

export function createAuditService(repo: AuditRepo) {
  /**
   * Recomputes one chain as the owner (operator tool): every link, every hash, seq contiguity, and the
   * head, so an edited, inserted, reordered or deleted row (including the newest) is reported.
   */
  async function verifyChain(orgId: string): Promise<ChainReport> {
    const { events, head } = await repo.readChainAsOwner(orgId);
    const problems: string[] = [];
    let prevHash = GENESIS_HASH;
    let expectedSeq = 1;
    for (const r of events) {
      const seq = r.seq;
      if (seq !== expectedSeq) problems.push(`seq ${seq}: expected seq ${expectedSeq} (a row is missing or was inserted)`);
      if (r.prevHash !== prevHash) problems.push(`seq ${seq}: prev_hash does not match the previous event's hash`);
      if (eventHash(r.prevHash, { ...chained(r), tenantId: orgId }) !== r.hash) problems.push(`seq ${seq}: content does not match its hash (edited)`);
      prevHash = r.hash;
      expectedSeq = seq + 1;
    }
    const lastSeq = events.length > 0 ? events[events.length - 1]!.seq : 0;
    if (!head) {
      if (events.length > 0) problems.push('the chain head is missing');
    } else if (head.lastSeq !== lastSeq) {
      problems.push(`head says seq ${head.lastSeq} but the last event is seq ${lastSeq} (events deleted)`);
    } else if (head.lastHash !== prevHash) {
      problems.push('head hash does not match the last event');
    }
    return { orgId, ok: problems.length === 0, events: events.length, problems };
  }

  return {
    /**
     * Appends one event to the org's chain inside the caller's transaction (so the event commits or rolls
     * back with the change it records). Locking the chain head row serializes appends per org.
     */
    async record(trx: TxHandle, input: AuditEventInput): Promise<{ id: string; seq: number; hash: string }> {
      const prev = await repo.lockHead(trx, input.orgId);
      const { actor, requestId, ip } = input.context;
      const fields: ChainedFields = {
        tenantId: input.orgId,
        id: newId(),
        seq: prev.lastSeq + 1,
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
      };
      const hash = eventHash(prev.lastHash, fields);
      await repo.append(trx, { ...fields, changes: input.changes ?? {}, prevHash: prev.lastHash, hash });
      return { id: fields.id, seq: fields.seq, hash };
    },

    /** Newest first, keyset-paginated on seq; the cursor is bound to the filters (reused with others: 400). */
    async list(orgId: string, f: AuditFilter): Promise<{ data: AuditEvent[]; nextCursor: string | null }> {
      const fingerprint = listFingerprint({
        list: 'audit-events',
        action: f.action,
        actorId: f.actorId,
        targetType: f.targetType,
        targetId: f.targetId,
        from: f.from?.toISOString(),
        to: f.to?.toISOString(),
      });
      const beforeSeq = f.cursor
        ? (decodeCursor(f.cursor, fingerprint, ([, seq]) => typeof seq === 'number' && Number.isSafeInteger(seq) && seq > 0)[1] as number)
        : undefined;
      const rows = await repo.list(orgId, { ...f, beforeSeq }, f.limit + 1);
      const page = toPage(rows, f.limit, fingerprint, (r) => [null, r.seq]);
      return { data: page.data.map(toEvent), nextCursor: page.nextCursor };
    },

    verifyChain,

    /** Every chain that has a head (all orgs plus the platform chain). */
    async verifyAllChains(): Promise<ChainReport[]> {
      const reports: ChainReport[] = [];
      for (const id of await repo.chainIdsAsOwner()) reports.push(await verifyChain(id));
      return reports;
    },
  };
}

export type AuditService = ReturnType<typeof createAuditService>;
