import { createHash } from 'node:crypto';

/** prev_hash of the first event of every chain. */
export const GENESIS_HASH = '0'.repeat(64);

export interface ChainedFields {
  tenantId: string;
  id: string;
  seq: number;
  occurredAt: Date;
  actorType: string;
  actorId: string;
  actorUserId: string | null;
  action: string;
  targetType: string;
  targetId: string;
  requestId: string | null;
  ip: string | null;
  changes: unknown;
  /**
   * Reference to the event's personal data (audit_personal_data rows), or null (events before migration
   * 0075, and events without personal data). The hash covers the reference, never the data itself, so
   * erasing the data leaves the chain intact.
   */
  pdRef: string | null;
}

/** JSON with object keys sorted at every level, so jsonb's key reordering does not change the hash. */
export function canonicalJson(value: unknown): string {
  if (value === null || typeof value !== 'object') return JSON.stringify(value ?? null);
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(',')}]`;
  const entries = Object.entries(value as Record<string, unknown>)
    .filter(([, v]) => v !== undefined)
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${canonicalJson(v)}`).join(',')}}`;
}

/** hash = SHA-256(prev_hash ‖ canonical event): editing any field, or the order, breaks every later link. */
export function eventHash(prevHash: string, e: ChainedFields): string {
  const body = canonicalJson({
    tenantId: e.tenantId,
    id: e.id,
    seq: e.seq,
    occurredAt: e.occurredAt.toISOString(),
    actorType: e.actorType,
    actorId: e.actorId,
    actorUserId: e.actorUserId,
    action: e.action,
    targetType: e.targetType,
    targetId: e.targetId,
    requestId: e.requestId,
    ip: e.ip,
    changes: e.changes,
    // Absent (not null) when there is none: events hashed before the reference existed keep their hash.
    pdRef: e.pdRef ?? undefined,
  });
  return createHash('sha256').update(prevHash).update('\n').update(body).digest('hex');
}
