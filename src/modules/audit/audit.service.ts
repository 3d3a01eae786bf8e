import { createHash } from 'node:crypto';
import type { TxHandle } from '../../platform/db/database.ts';
import type { EventPublisher } from '../../platform/outbox/publisher.ts';
import type { Actor, ActorContext } from '../../platform/http/actor.ts';
import { decodeCursor, listFingerprint, toPage } from '../../platform/http/pagination.ts';
import { newId } from '../../platform/ids.ts';
import { eventHash, GENESIS_HASH, type ChainedFields } from './audit.chain.ts';
import { pendingColumns, type AuditEventRow, type AuditListFilter, type AuditRepo, type Backlog, type PendingFields, type PersonalRow, type SequencedRow } from './audit.repo.ts';

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
  /**
   * Personal values (an e-mail address, a name), per data subject: kept out of the hashed record (listed
   * merged into `changes`) and erased with their subject. The request IP is filed this way by itself.
   */
  personal?: Array<{ subject: DataSubject; data: Record<string, unknown> }>;
}

/** Whom personal data is about: an account, or an e-mail address without one (an invitation). */
export type DataSubject = { userId: string } | { email: string };

/** A pending event's `audit_events` columns, as `pendingRow` gives them to a writer of many events at once. */
export type AuditPendingRow = ReturnType<typeof pendingColumns>;

/** The pending event `record` appends for `input` (its personal data, if any, under `pdRef`). */
function pendingFields(input: AuditEventInput, pdRef: string | null): PendingFields {
  const { actor, requestId } = input.context;
  return {
    tenantId: input.orgId,
    id: newId(),
    occurredAt: new Date(),
    actorType: actor.type,
    actorId: actor.id,
    actorUserId: actor.userId ?? null,
    action: input.action,
    targetType: input.target.type,
    targetId: input.target.id,
    requestId: requestId ?? null,
    // The IP is personal data: filed with the event's personal records, never in the hashed record.
    ip: null,
    changes: input.changes ?? {},
    pdRef,
  };
}

/** The stable, pseudonymous key of a subject: `user:<id>`, or `email:<sha256 of the lower-cased address>`. */
export function subjectKey(s: DataSubject): string {
  return 'userId' in s ? `user:${s.userId}` : `email:${createHash('sha256').update(s.email.trim().toLowerCase()).digest('hex')}`;
}

/** A data subject's audit trail across chains: events they did or that are about them, with their personal data. */
export interface SubjectAuditExport {
  events: Array<AuditEvent & { orgId: string }>;
  /** True when more than the export's limit of events exist (the newest were left out). */
  truncated: boolean;
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
  /** Reference to the event's personal data (covered by the hash; the data is not); null when none. */
  pdRef: string | null;
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
  /**
   * Events whose personal-data reference the hash does not cover: chained by a sequencer of the release
   * before migration 0075 during a rolling deploy (their content is covered; the reference is not).
   */
  unboundRefs: number;
}

/** At most this many audit events go into one data-subject export. */
export const SUBJECT_EXPORT_LIMIT = 10_000;

function groupByRef(rows: PersonalRow[]): Map<string, PersonalRow[]> {
  const out = new Map<string, PersonalRow[]>();
  for (const p of rows) out.set(p.ref, [...(out.get(p.ref) ?? []), p]);
  return out;
}

/** Pending events one sequencer round takes per chain (one transaction). */
export const SEQUENCE_BATCH = 500;

/** Chains one sequencer transaction takes (five round trips for the group). */
const SEQUENCE_GROUP = 200;

/** Rounds per sequencer pass for a chain with a long backlog (the rest waits for the next pass). */
const SEQUENCE_ROUNDS = 20;

/**
 * The event as listed: its personal data (when not erased) merged back — the IP, and the personal values
 * into `changes`. Erased data lists as nothing; the event itself is unchanged.
 */
const toEvent = (r: AuditEventRow, personal: PersonalRow[] = []): AuditEvent => {
  let ip = r.ip;
  let changes = r.changes;
  for (const p of personal) {
    const { ip: pIp, ...rest } = p.data;
    if (typeof pIp === 'string') ip ??= pIp;
    if (Object.keys(rest).length > 0) changes = { ...changes, ...rest };
  }
  return { ...toStoredEvent(r), ip, changes };
};

const toStoredEvent = (r: AuditEventRow): AuditEvent => ({
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
  pdRef: r.pdRef,
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
  pdRef: r.pdRef,
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

/** The event a SIEM receives per chained event: exactly the hashed fields, so it can verify the chain itself. */
export const AUDIT_EVENT_RECORDED = 'audit.event_recorded';

export interface AuditEventRecordedPayload {
  seq: number;
  id: string;
  occurredAt: string;
  actor: { type: string; id: string; userId: string | null };
  action: string;
  target: { type: string; id: string };
  requestId: string | null;
  /** As stored and hashed: null for events since migration 0075 (the IP is personal data, kept by reference). */
  ip: string | null;
  changes: Record<string, unknown>;
  pdRef: string | null;
  prevHash: string;
  hash: string;
}

export interface AuditStreaming {
  events: EventPublisher;
  /** Of these orgs, the ones that stream their audit log (an active webhook subscribed to audit.event_recorded): one call per sequencer pass. */
  enabledAmong(orgIds: string[]): Promise<Set<string>>;
}

const recorded = (r: SequencedRow): AuditEventRecordedPayload => ({
  seq: r.seq,
  id: r.id,
  occurredAt: r.occurredAt.toISOString(),
  actor: { type: r.actorType, id: r.actorId, userId: r.actorUserId },
  action: r.action,
  target: { type: r.targetType, id: r.targetId },
  requestId: r.requestId,
  ip: r.ip,
  changes: r.changes,
  pdRef: r.pdRef,
  prevHash: r.prevHash,
  hash: r.hash,
});

export function createAuditService(repo: AuditRepo, streaming?: AuditStreaming) {
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
    let unboundRefs = 0;
    const { head, backlog } = await repo.readChainAsOwner(orgId, (page) => {
      for (const r of page) {
        const seq = r.seq;
        if (seq !== expectedSeq) problems.push(`seq ${seq}: expected seq ${expectedSeq} (a row is missing or was inserted)`);
        if (r.prevHash !== prevHash) problems.push(`seq ${seq}: prev_hash does not match the previous event's hash`);
        const fields = { ...chained(r, seq), tenantId: orgId };
        if (eventHash(r.prevHash, fields) !== r.hash) {
          if (r.pdRef !== null && eventHash(r.prevHash, { ...fields, pdRef: null }) === r.hash) unboundRefs++;
          else problems.push(`seq ${seq}: content does not match its hash (edited)`);
        }
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
    return { orgId, ok: problems.length === 0, events: count, problems, backlog, unboundRefs };
  }

  return {
    /**
     * Appends one pending event inside the caller's transaction (so it commits or rolls back with the
     * change it records). No shared row is locked: the sequencer chains it after it commits.
     */
    async record(trx: TxHandle, input: AuditEventInput): Promise<{ id: string }> {
      const { actor, ip } = input.context;
      // One personal record per subject; the IP is about the actor (or, before sign-in, the target user).
      const bySubject = new Map<string | null, Record<string, unknown>>();
      const add = (subject: string | null, data: Record<string, unknown>) => bySubject.set(subject, { ...bySubject.get(subject), ...data });
      if (ip) {
        const who = actor.userId ?? (input.target.type === 'user' ? input.target.id : null);
        add(who ? subjectKey({ userId: who }) : null, { ip });
      }
      for (const p of input.personal ?? []) add(subjectKey(p.subject), p.data);
      const personal = [...bySubject].map(([subject, data]) => ({ subject, data }));
      const event = pendingFields(input, personal.length > 0 ? newId() : null);
      await repo.appendPending(trx, event, personal);
      return { id: event.id };
    },

    /**
     * The pending `audit_events` row `record` would append, by column, for a writer that appends many orgs'
     * events in one statement (the invoice run's `billing_invoice_run_write`) in the same transaction as the
     * change. Events with personal data (an IP, `personal`) go through `record`: they need their data rows too.
     */
    pendingRow(input: AuditEventInput): AuditPendingRow {
      if (input.context.ip || (input.personal?.length ?? 0) > 0) throw new Error('audit: an event with personal data is appended by record()');
      return pendingColumns(pendingFields(input, null));
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
      const personal = groupByRef(await repo.personalOf(orgId, page.data.flatMap((r) => (r.pdRef ? [r.pdRef] : []))));
      return { data: page.data.map((r) => toEvent(r, personal.get(r.pdRef ?? '') ?? [])), nextCursor: page.nextCursor };
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
      // Streaming: a chain's events go into the outbox in its sequencing transaction, in seq order, so an event
      // is streamed if and only if it was chained (asked before the transactions: one connection when embedded).
      const streamed = streaming ? await streaming.enabledAmong(ids.filter((id) => id !== PLATFORM_AUDIT_TENANT)) : new Set<string>();
      const publish = streaming
        ? async (trx: TxHandle, tenantId: string, rows: SequencedRow[]) => {
            if (!streamed.has(tenantId)) return;
            for (const r of rows) await streaming.events.add(trx, { name: AUDIT_EVENT_RECORDED, tenantId, payload: recorded(r) });
          }
        : undefined;
      let sequenced = 0;
      // Rounds of SEQUENCE_GROUP chains per transaction; a chain that filled its round (more backlog than
      // SEQUENCE_BATCH) goes on in the next, up to SEQUENCE_ROUNDS rounds per pass.
      let todo = ids;
      for (let round = 0; round < SEQUENCE_ROUNDS && todo.length > 0; round++) {
        const more: string[] = [];
        for (let i = 0; i < todo.length; i += SEQUENCE_GROUP) {
          const done = await repo.sequenceChains(todo.slice(i, i + SEQUENCE_GROUP), SEQUENCE_BATCH, link, publish);
          for (const [id, n] of done) {
            sequenced += n;
            if (n >= SEQUENCE_BATCH) more.push(id);
          }
        }
        todo = more;
      }
      return { chains: ids.length, sequenced };
    },

    /**
     * Erases the personal data recorded about the subjects in every chain (GDPR art. 17), in the caller's
     * transaction. The events, their hashes and references stay: the chain still verifies. Idempotent.
     */
    eraseSubjects: (trx: TxHandle, subjects: DataSubject[]): Promise<number> => repo.eraseSubjects(trx, subjects.map(subjectKey)),

    /**
     * A user's audit trail (GDPR art. 15) across the chains that hold something about them: the platform
     * chain, `orgIds` (their orgs), and every chain with personal data about one of the subjects. Personal
     * data about other people in those events is left out.
     */
    async exportSubject(userId: string, subjects: DataSubject[], orgIds: string[], limit = SUBJECT_EXPORT_LIMIT): Promise<SubjectAuditExport> {
      const keys = [...new Set([{ userId } as DataSubject, ...subjects].map(subjectKey))];
      const { events, personal, truncated } = await repo.subjectEvents([PLATFORM_AUDIT_TENANT, ...orgIds], userId, keys, limit);
      const byRef = groupByRef(personal);
      return { events: events.map((r) => ({ ...toEvent(r, byRef.get(r.pdRef ?? '') ?? []), orgId: r.tenantId })), truncated };
    },

    /** Every chain's pending events together (metrics). */
    backlog: (): Promise<Backlog> => repo.backlogAsOwner(),
  };
}

export type AuditService = ReturnType<typeof createAuditService>;
