import { sql } from 'kysely';
import type { TxHandle } from '../db/database.ts';
import { newId } from '../ids.ts';
import { captureEventContext } from './event-context.ts';

/** The envelope every event travels in, from the outbox to each consumer's handler. */
export interface EventEnvelope<P = unknown> {
  id: string;
  /** `<module>.<what_happened>`, e.g. 'projects.task_created'. */
  name: string;
  /** The tenant whose state changed; null for platform events. */
  tenantId: string | null;
  payload: P;
  occurredAt: string;
  requestId: string | null;
  traceparent: string | null;
}

export interface NewEvent<P = unknown> {
  name: string;
  tenantId?: string | null;
  payload: P;
  /** Defaults to the current request's id / trace context (see context.ts). */
  requestId?: string;
  traceparent?: string;
}

export const EVENT_NAME = /^[a-z0-9_]+\.[a-z0-9_.]+$/;
/** Postgres NOTIFY channel: "the outbox has new rows" (see event-bus.ts, which LISTENs on it). */
export const OUTBOX_CHANNEL = 'plinth_outbox';
/**
 * A guard against documents in events, not a limit a valid request may reach: payloads carry ids and
 * changed fields, an update's old and new values at most, and every field comes from a request bounded by
 * BODY_LIMIT_BYTES (1 MiB by default). JSON escaping cannot grow a string beyond what the request's own
 * JSON already spent on it, so twice the body limit plus the envelope fits well within this.
 */
export const MAX_PAYLOAD_BYTES = 16 * 1024 * 1024;

export class OutboxError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'OutboxError';
  }
}

/**
 * The one way a module publishes: `events.add(trx, event)` inside the transaction that makes the change.
 * Every module receives it as a required dependency, so a wiring slip is a type error, not a lost event.
 */
export interface EventPublisher {
  add<P>(trx: TxHandle, event: NewEvent<P>): Promise<EventEnvelope<P>>;
  /**
   * The caller inserted outbox rows itself (`outboxEnvelope` rows, many in one statement, with the NOTIFY):
   * wakes this process's relay as `add` does, so an embedded worker (no NOTIFY) relays them soon.
   */
  nudge?(): void;
}

/**
 * Writes an event in the caller's transaction: it is relayed only if that transaction commits.
 * Returns the envelope (with its UUIDv7 id).
 */
export async function addToOutbox<P>(trx: TxHandle, event: NewEvent<P>): Promise<EventEnvelope<P>> {
  const { envelope, json } = outboxEnvelope(event);
  // The NOTIFY rides in the same statement (no extra round trip) and Postgres delivers it only at commit:
  // a worker in another process relays at once instead of waiting for its next poll.
  await sql`
    with added as (
      insert into outbox (id, tenant_id, name, payload, request_id, traceparent, occurred_at)
      values (${envelope.id}, ${envelope.tenantId}, ${envelope.name}, ${json}::jsonb, ${envelope.requestId},
              ${envelope.traceparent}, ${envelope.occurredAt})
      returning id)
    select pg_notify(${OUTBOX_CHANNEL}, '') from added`.execute(trx);
  return envelope;
}

/**
 * The envelope of a new event, checked (name, payload size), with its payload's JSON: what `addToOutbox`
 * inserts. A writer that inserts many events in one statement (the invoice run) builds its rows with it.
 */
export function outboxEnvelope<P>(event: NewEvent<P>): { envelope: EventEnvelope<P>; json: string } {
  if (!EVENT_NAME.test(event.name)) throw new OutboxError(`invalid event name "${event.name}" (use module.what_happened)`);
  const json = JSON.stringify(event.payload ?? null);
  if (Buffer.byteLength(json, 'utf8') > MAX_PAYLOAD_BYTES) throw new OutboxError(`event ${event.name} payload exceeds ${MAX_PAYLOAD_BYTES} bytes`);
  const ctx = captureEventContext();
  const envelope: EventEnvelope<P> = {
    id: newId(),
    name: event.name,
    tenantId: event.tenantId ?? null,
    payload: event.payload,
    occurredAt: new Date().toISOString(),
    requestId: event.requestId ?? ctx.requestId ?? null,
    traceparent: event.traceparent ?? ctx.traceparent ?? null,
  };
  return { envelope, json };
}

export interface OutboxRow {
  id: string;
  tenant_id: string | null;
  name: string;
  payload: unknown;
  request_id: string | null;
  traceparent: string | null;
  occurred_at: Date | string;
}

export function toEnvelope(row: OutboxRow): EventEnvelope {
  return {
    id: row.id,
    name: row.name,
    tenantId: row.tenant_id,
    payload: row.payload,
    occurredAt: new Date(row.occurred_at).toISOString(),
    requestId: row.request_id,
    traceparent: row.traceparent,
  };
}
