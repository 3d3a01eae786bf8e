import { sql, type Kysely, type Transaction } from 'kysely';
import { setTenant, type Database } from '../../platform/db/database.ts';
import { decodeCursor, listFingerprint, toPage } from '../../platform/http/pagination.ts';
import { newId } from '../../platform/ids.ts';
import { eventHash, GENESIS_HASH, type ChainedFields } from './audit.chain.ts';

/**
 * Events that belong to no org (signup of a user, login, password change, platform-admin actions) go to
 * this chain, so they are just as tamper-evident as the per-org ones.
 */
export const PLATFORM_AUDIT_TENANT = '00000000-0000-0000-0000-000000000000';

export interface AuditActor {
  type: 'user' | 'api_key' | 'system';
  id: string;
  /** The user behind the actor (for an API key, its creator). */
  userId?: string | null;
}

/** Who did it and from where: built from a request with auditContextFrom(). */
export interface AuditContext {
  actor: AuditActor;
  requestId?: string | null;
  ip?: string | null;
}

export interface AuditEventInput {
  /** The org whose chain records it; the transaction must run in this tenant's context. */
  orgId: string;
  action: string;
  target: { type: string; id: string };
  /** Changed fields, e.g. `{ role: { from: 'member', to: 'admin' } }`. Never secrets. */
  changes?: Record<string, unknown>;
  context: AuditContext;
}

export interface AuditEvent {
  id: string;
  seq: number;
  occurredAt: Date;
  actor: { type: string; id: string; userId: string | null };
  action: string;
  target: { type: string; id: string };
  requestId: string | null;
  ip: string | null;
  changes: Record<string, unknown>;
  prevHash: string;
  hash: string;
}

/**
 * Appends one event to the org's chain inside the caller's transaction (so the event commits or rolls
 * back with the change it records). Locking the chain head row serializes appends per org.
 */
export async function recordAuditEvent(trx: Transaction<any>, input: AuditEventInput): Promise<{ id: string; seq: number; hash: string }> {
  const tenantId = input.orgId;
  await sql`insert into audit_chains (tenant_id, last_seq, last_hash) values (${tenantId}, 0, ${GENESIS_HASH})
            on conflict (tenant_id) do nothing`.execute(trx);
  const head = await sql<{ last_seq: number | string; last_hash: string }>`
    select last_seq, last_hash from audit_chains where tenant_id = ${tenantId} for update`.execute(trx);
  const prev = head.rows[0]!;
  const fields: ChainedFields = {
    tenantId,
    id: newId(),
    seq: Number(prev.last_seq) + 1,
    occurredAt: new Date(),
    actorType: input.context.actor.type,
    actorId: input.context.actor.id,
    actorUserId: input.context.actor.userId ?? null,
    action: input.action,
    targetType: input.target.type,
    targetId: input.target.id,
    requestId: input.context.requestId ?? null,
    ip: input.context.ip ?? null,
    changes: input.changes ?? {},
  };
  const hash = eventHash(prev.last_hash, fields);
  await trx
    .insertInto('audit_events')
    .values({
      tenant_id: tenantId,
      id: fields.id,
      seq: fields.seq,
      occurred_at: fields.occurredAt,
      actor_type: fields.actorType,
      actor_id: fields.actorId,
      actor_user_id: fields.actorUserId,
      action: fields.action,
      target_type: fields.targetType,
      target_id: fields.targetId,
      request_id: fields.requestId,
      ip: fields.ip,
      changes: JSON.stringify(fields.changes),
      prev_hash: prev.last_hash,
      hash,
    })
    .execute();
  await sql`update audit_chains set last_seq = ${fields.seq}, last_hash = ${hash}, updated_at = now()
            where tenant_id = ${tenantId}`.execute(trx);
  return { id: fields.id, seq: fields.seq, hash };
}

export interface AuditFilter {
  action?: string;
  actorId?: string;
  targetType?: string;
  targetId?: string;
  from?: string;
  to?: string;
  cursor?: string;
  limit?: number;
}

function toEvent(r: Record<string, any>): AuditEvent {
  return {
    id: r.id,
    seq: Number(r.seq),
    occurredAt: new Date(r.occurred_at),
    actor: { type: r.actor_type, id: r.actor_id, userId: r.actor_user_id ?? null },
    action: r.action,
    target: { type: r.target_type, id: r.target_id },
    requestId: r.request_id ?? null,
    ip: r.ip ?? null,
    changes: typeof r.changes === 'string' ? JSON.parse(r.changes) : (r.changes ?? {}),
    prevHash: r.prev_hash,
    hash: r.hash,
  };
}

/** Newest first, keyset-paginated on seq (backed by the (tenant_id, …, seq) indexes). */
export async function listAuditEvents(db: Database, orgId: string, f: AuditFilter): Promise<{ data: AuditEvent[]; nextCursor: string | null }> {
  const limit = Math.min(Math.max(f.limit ?? 50, 1), 100);
  // The cursor is bound to the filters: reused with other ones it would skip or repeat events.
  const fingerprint = listFingerprint({ list: 'audit-events', action: f.action, actorId: f.actorId, targetType: f.targetType, targetId: f.targetId, from: f.from, to: f.to });
  const before = f.cursor
    ? (decodeCursor(f.cursor, fingerprint, ([, seq]) => typeof seq === 'number' && Number.isSafeInteger(seq) && seq > 0)[1] as number)
    : undefined;
  const rows = await db.withTenantRead(orgId, async (trx) => {
    let q = trx.selectFrom('audit_events').selectAll().where('tenant_id', '=', orgId);
    if (f.action) q = q.where('action', '=', f.action);
    if (f.actorId) q = q.where('actor_id', '=', f.actorId);
    if (f.targetType) q = q.where('target_type', '=', f.targetType);
    if (f.targetId) q = q.where('target_id', '=', f.targetId);
    if (f.from) q = q.where('occurred_at', '>=', new Date(f.from));
    if (f.to) q = q.where('occurred_at', '<', new Date(f.to));
    if (before !== undefined) q = q.where('seq', '<', before);
    return q.orderBy('seq', 'desc').limit(limit + 1).execute();
  });
  const page = toPage(rows, limit, fingerprint, (r) => [null, Number(r.seq)]);
  return { data: page.data.map(toEvent), nextCursor: page.nextCursor };
}

export interface ChainReport {
  orgId: string;
  ok: boolean;
  events: number;
  problems: string[];
}

/**
 * Recomputes one chain as the owner (operator tool): every link, every hash, seq contiguity, and the
 * head, so an edited, inserted, reordered or deleted row (including the newest) is reported.
 */
export async function verifyChain(owner: Kysely<any>, orgId: string): Promise<ChainReport> {
  return owner.transaction().execute(async (trx) => {
    await setTenant(trx, orgId);
    const rows = await trx.selectFrom('audit_events').selectAll().where('tenant_id', '=', orgId).orderBy('seq', 'asc').execute();
    const head = await trx.selectFrom('audit_chains').select(['last_seq', 'last_hash']).where('tenant_id', '=', orgId).executeTakeFirst();
    const problems: string[] = [];
    let prevHash = GENESIS_HASH;
    let expectedSeq = 1;
    for (const r of rows) {
      const seq = Number(r.seq);
      if (seq !== expectedSeq) problems.push(`seq ${seq}: expected seq ${expectedSeq} (a row is missing or was inserted)`);
      if (r.prev_hash !== prevHash) problems.push(`seq ${seq}: prev_hash does not match the previous event's hash`);
      const e = toEvent(r);
      const recomputed = eventHash(r.prev_hash, {
        tenantId: orgId,
        id: e.id,
        seq,
        occurredAt: e.occurredAt,
        actorType: e.actor.type,
        actorId: e.actor.id,
        actorUserId: e.actor.userId,
        action: e.action,
        targetType: e.target.type,
        targetId: e.target.id,
        requestId: e.requestId,
        ip: e.ip,
        changes: e.changes,
      });
      if (recomputed !== r.hash) problems.push(`seq ${seq}: content does not match its hash (edited)`);
      prevHash = r.hash;
      expectedSeq = seq + 1;
    }
    const lastSeq = rows.length > 0 ? Number(rows[rows.length - 1]!.seq) : 0;
    if (!head) {
      if (rows.length > 0) problems.push('the chain head is missing');
    } else {
      if (Number(head.last_seq) !== lastSeq) problems.push(`head says seq ${Number(head.last_seq)} but the last event is seq ${lastSeq} (events deleted)`);
      else if (head.last_hash !== prevHash) problems.push('head hash does not match the last event');
    }
    return { orgId, ok: problems.length === 0, events: rows.length, problems };
  });
}

/** Every chain that has a head (all orgs plus the platform chain). */
export async function verifyAllChains(owner: Kysely<any>): Promise<ChainReport[]> {
  const heads = await owner.selectFrom('audit_chains').select('tenant_id').orderBy('tenant_id').execute();
  const reports: ChainReport[] = [];
  for (const h of heads) reports.push(await verifyChain(owner, h.tenant_id as string));
  return reports;
}
