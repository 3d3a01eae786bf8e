import { sql, type Selectable, type Transaction, type UpdateObject } from 'kysely';
import type { Database, DB, DbScope } from '../../platform/db/database.ts';

/** The tables the integrations module owns; its repo sees only these. */
export type IntegrationsTables = Pick<DB, 'integration_connections' | 'integration_deliveries' | 'integration_inbox'>;
/** Always inside a tenant transaction (RLS). */
export type Trx = Transaction<IntegrationsTables>;

export function integrationsScope(db: Database): DbScope<IntegrationsTables> {
  return db.scope('integration_connections', 'integration_deliveries', 'integration_inbox');
}

export type BackfillStatus = 'idle' | 'running' | 'done';

export interface Connection {
  id: string;
  connector: string;
  name: string;
  config: Record<string, unknown>;
  events: string[];
  active: boolean;
  lastSuccessAt: Date | null;
  lastErrorAt: Date | null;
  lastError: string | null;
  consecutiveFailures: number;
  backfillStatus: BackfillStatus;
  backfillCursor: string | null;
  backfillCount: number;
  createdAt: Date;
  updatedAt: Date;
}

export type DeliveryStatus = 'pending' | 'succeeded' | 'dead';

export interface Delivery {
  id: string;
  connectionId: string;
  eventId: string;
  eventName: string;
  status: DeliveryStatus;
  attempts: number;
  lastStatusCode: number | null;
  lastError: string | null;
  createdAt: Date;
  updatedAt: Date;
  deliveredAt: Date | null;
}

/** Public columns: the credentials' ciphertext is read solely by the sender (credentialsOf). */
const CONNECTION_COLUMNS = [
  'id', 'connector', 'name', 'config', 'events', 'active', 'last_success_at', 'last_error_at', 'last_error',
  'consecutive_failures', 'backfill_status', 'backfill_cursor', 'backfill_count', 'created_at', 'updated_at',
] as const;
const DELIVERY_COLUMNS = [
  'id', 'connection_id', 'event_id', 'event_name', 'status', 'attempts', 'last_status_code', 'last_error', 'created_at', 'updated_at', 'delivered_at',
] as const;
type ConnectionRow = Pick<Selectable<DB['integration_connections']>, (typeof CONNECTION_COLUMNS)[number]>;
type DeliveryRow = Pick<Selectable<DB['integration_deliveries']>, (typeof DELIVERY_COLUMNS)[number]>;

const date = (v: Date | string | null) => (v === null ? null : new Date(v));

function toConnection(r: ConnectionRow): Connection {
  return {
    id: r.id,
    connector: r.connector,
    name: r.name,
    config: r.config as Record<string, unknown>,
    events: r.events,
    active: r.active,
    lastSuccessAt: date(r.last_success_at),
    lastErrorAt: date(r.last_error_at),
    lastError: r.last_error,
    consecutiveFailures: r.consecutive_failures,
    // the column's CHECK constraint admits only these
    backfillStatus: r.backfill_status as BackfillStatus,
    backfillCursor: r.backfill_cursor,
    backfillCount: r.backfill_count,
    createdAt: new Date(r.created_at),
    updatedAt: new Date(r.updated_at),
  };
}

function toDelivery(r: DeliveryRow): Delivery {
  return {
    id: r.id,
    connectionId: r.connection_id,
    eventId: r.event_id,
    eventName: r.event_name,
    status: r.status as DeliveryStatus,
    attempts: r.attempts,
    lastStatusCode: r.last_status_code,
    lastError: r.last_error,
    createdAt: new Date(r.created_at),
    updatedAt: new Date(r.updated_at),
    deliveredAt: date(r.delivered_at),
  };
}

export interface NewConnection {
  tenantId: string;
  id: string;
  connector: string;
  name: string;
  config: Record<string, unknown>;
  credentialsCiphertext: string;
  events: string[];
  active: boolean;
  createdBy: string | null;
}

export interface ConnectionChanges {
  name?: string;
  config?: Record<string, unknown>;
  credentialsCiphertext?: string;
  events?: string[];
  active?: boolean;
}

export async function insertConnection(trx: Trx, c: NewConnection): Promise<Connection> {
  const r = await trx
    .insertInto('integration_connections')
    .values({
      tenant_id: c.tenantId,
      id: c.id,
      connector: c.connector,
      name: c.name,
      config: JSON.stringify(c.config),
      credentials_ciphertext: c.credentialsCiphertext,
      events: c.events,
      active: c.active,
      created_by: c.createdBy,
    })
    .returning(CONNECTION_COLUMNS)
    .executeTakeFirstOrThrow();
  return toConnection(r);
}

export async function findConnection(trx: Trx, tenantId: string, id: string, lock = false): Promise<Connection | undefined> {
  let q = trx.selectFrom('integration_connections').select(CONNECTION_COLUMNS).where('tenant_id', '=', tenantId).where('id', '=', id);
  if (lock) q = q.forUpdate();
  const r = await q.executeTakeFirst();
  return r && toConnection(r);
}

export async function credentialsOf(trx: Trx, tenantId: string, id: string): Promise<string | undefined> {
  const r = await trx
    .selectFrom('integration_connections')
    .select('credentials_ciphertext')
    .where('tenant_id', '=', tenantId)
    .where('id', '=', id)
    .executeTakeFirst();
  return r?.credentials_ciphertext;
}

export async function listConnections(trx: Trx, tenantId: string, limit: number, afterId?: string): Promise<Connection[]> {
  let q = trx.selectFrom('integration_connections').select(CONNECTION_COLUMNS).where('tenant_id', '=', tenantId).orderBy('id').limit(limit + 1);
  if (afterId) q = q.where('id', '>', afterId);
  return (await q.execute()).map(toConnection);
}

export async function updateConnection(trx: Trx, tenantId: string, id: string, c: ConnectionChanges): Promise<Connection | undefined> {
  const set: UpdateObject<IntegrationsTables, 'integration_connections'> = { updated_at: sql<Date>`now()` };
  if (c.name !== undefined) set.name = c.name;
  if (c.config !== undefined) set.config = JSON.stringify(c.config);
  if (c.credentialsCiphertext !== undefined) set.credentials_ciphertext = c.credentialsCiphertext;
  if (c.events !== undefined) set.events = c.events;
  if (c.active !== undefined) set.active = c.active;
  // New credentials or a re-enabled connection: count failures afresh.
  if (c.credentialsCiphertext !== undefined || c.active) set.consecutive_failures = 0;
  const r = await trx
    .updateTable('integration_connections')
    .set(set)
    .where('tenant_id', '=', tenantId)
    .where('id', '=', id)
    .returning(CONNECTION_COLUMNS)
    .executeTakeFirst();
  return r && toConnection(r);
}

export async function deleteConnection(trx: Trx, tenantId: string, id: string): Promise<boolean> {
  const r = await trx.deleteFrom('integration_connections').where('tenant_id', '=', tenantId).where('id', '=', id).executeTakeFirst();
  return Number(r.numDeletedRows) > 0;
}

/** Active connections of the tenant subscribed to the event (the GIN index on events). */
export async function subscribedConnections(trx: Trx, tenantId: string, eventName: string): Promise<string[]> {
  const rows = await trx
    .selectFrom('integration_connections')
    .select('id')
    .where('tenant_id', '=', tenantId)
    .where('active', '=', true)
    .where(sql<boolean>`events @> array[${eventName}]::text[]`)
    .execute();
  return rows.map((r) => r.id);
}

export interface NewDelivery {
  tenantId: string;
  id: string;
  connectionId: string;
  eventId: string;
  eventName: string;
  event: unknown;
}

/** A replayed event inserts nothing (unique per connection + event). Returns the ids inserted. */
export async function insertDeliveries(trx: Trx, rows: NewDelivery[]): Promise<string[]> {
  if (rows.length === 0) return [];
  const inserted = await trx
    .insertInto('integration_deliveries')
    .values(rows.map((d) => ({ tenant_id: d.tenantId, id: d.id, connection_id: d.connectionId, event_id: d.eventId, event_name: d.eventName, event: JSON.stringify(d.event) })))
    .onConflict((oc) => oc.columns(['tenant_id', 'connection_id', 'event_id']).doNothing())
    .returning('id')
    .execute();
  return inserted.map((r) => r.id);
}

export async function findDelivery(trx: Trx, tenantId: string, id: string): Promise<Delivery | undefined> {
  const r = await trx.selectFrom('integration_deliveries').select(DELIVERY_COLUMNS).where('tenant_id', '=', tenantId).where('id', '=', id).executeTakeFirst();
  return r && toDelivery(r);
}

/**
 * One sender per connection at a time (so a connection's events go out in order): the connection's row
 * lock for the handler's transaction, or false when another sender holds it (SKIP LOCKED: nobody waits).
 */
export async function lockConnection(trx: Trx, tenantId: string, id: string): Promise<boolean> {
  const r = await trx
    .selectFrom('integration_connections')
    .select('id')
    .where('tenant_id', '=', tenantId)
    .where('id', '=', id)
    .forUpdate()
    .skipLocked()
    .executeTakeFirst();
  return r !== undefined;
}

/** The connection's oldest pending deliveries (by event id, a UUIDv7: publish order), at most `limit`, locked. */
export async function claimBatch(trx: Trx, tenantId: string, connectionId: string, limit: number): Promise<Array<{ id: string; event: unknown }>> {
  return trx
    .selectFrom('integration_deliveries')
    .select(['id', 'event'])
    .where('tenant_id', '=', tenantId)
    .where('connection_id', '=', connectionId)
    .where('status', '=', 'pending')
    .orderBy('event_id')
    .limit(limit)
    .forUpdate()
    .skipLocked()
    .execute();
}

export async function settle(
  trx: Trx,
  tenantId: string,
  ids: string[],
  outcome: { status: DeliveryStatus; statusCode: number | null; error: string | null },
): Promise<void> {
  if (ids.length === 0) return;
  await trx
    .updateTable('integration_deliveries')
    .set({
      status: outcome.status,
      attempts: sql<number>`attempts + 1`,
      last_status_code: outcome.statusCode,
      last_error: outcome.error?.slice(0, 1000) ?? null,
      updated_at: sql<Date>`now()`,
      ...(outcome.status === 'succeeded' ? { delivered_at: sql<Date>`now()` } : {}),
    })
    .where('tenant_id', '=', tenantId)
    .where('id', 'in', ids)
    .execute();
}

/** Health bookkeeping on the connection after a vendor call. */
export async function recordHealth(trx: Trx, tenantId: string, id: string, error: string | null): Promise<void> {
  const set: UpdateObject<IntegrationsTables, 'integration_connections'> =
    error === null
      ? { last_success_at: sql<Date>`now()`, consecutive_failures: 0 }
      : { last_error_at: sql<Date>`now()`, last_error: error.slice(0, 1000), consecutive_failures: sql<number>`consecutive_failures + 1` };
  await trx.updateTable('integration_connections').set(set).where('tenant_id', '=', tenantId).where('id', '=', id).execute();
}

/** Pending (backlog) and dead-letter counts of a connection. */
export async function deliveryCounts(trx: Trx, tenantId: string, connectionId: string): Promise<{ backlog: number; dead: number }> {
  const rows = await trx
    .selectFrom('integration_deliveries')
    .select(['status', sql<number>`count(*)::int`.as('n')])
    .where('tenant_id', '=', tenantId)
    .where('connection_id', '=', connectionId)
    .where('status', 'in', ['pending', 'dead'])
    .groupBy('status')
    .execute();
  const of = (s: string) => rows.find((r) => r.status === s)?.n ?? 0;
  return { backlog: of('pending'), dead: of('dead') };
}

export async function listDeliveries(trx: Trx, tenantId: string, connectionId: string, status: DeliveryStatus | undefined, limit: number, beforeId?: string): Promise<Delivery[]> {
  let q = trx
    .selectFrom('integration_deliveries')
    .select(DELIVERY_COLUMNS)
    .where('tenant_id', '=', tenantId)
    .where('connection_id', '=', connectionId)
    .orderBy('id', 'desc')
    .limit(limit + 1);
  if (status) q = q.where('status', '=', status);
  if (beforeId) q = q.where('id', '<', beforeId);
  return (await q.execute()).map(toDelivery);
}

/** Dead letters of a connection back to pending (replay), at most `limit`. Returns their ids. */
export async function reopenDead(trx: Trx, tenantId: string, connectionId: string, ids: string[] | undefined, limit: number): Promise<string[]> {
  let pick = trx
    .selectFrom('integration_deliveries')
    .select('id')
    .where('tenant_id', '=', tenantId)
    .where('connection_id', '=', connectionId)
    .where('status', '=', 'dead')
    .orderBy('id')
    .limit(limit);
  if (ids) pick = pick.where('id', 'in', ids);
  const picked = (await pick.execute()).map((r) => r.id);
  if (picked.length === 0) return [];
  await trx
    .updateTable('integration_deliveries')
    .set({ status: 'pending', updated_at: sql<Date>`now()` })
    .where('tenant_id', '=', tenantId)
    .where('id', 'in', picked)
    .execute();
  return picked;
}

export async function setBackfill(trx: Trx, tenantId: string, id: string, b: { status: BackfillStatus; cursor: string | null; addCount?: number; resetCount?: boolean }): Promise<void> {
  await trx
    .updateTable('integration_connections')
    .set({
      backfill_status: b.status,
      backfill_cursor: b.cursor,
      backfill_count: b.resetCount ? 0 : sql<number>`backfill_count + ${b.addCount ?? 0}`,
      updated_at: sql<Date>`now()`,
    })
    .where('tenant_id', '=', tenantId)
    .where('id', '=', id)
    .execute();
}

/** Stores inbound vendor events; one already stored (same connection + key) is skipped. Returns the new ids. */
export async function insertInbox(
  trx: Trx,
  tenantId: string,
  connectionId: string,
  rows: Array<{ id: string; key: string; type: string; payload: Record<string, unknown> }>,
): Promise<string[]> {
  if (rows.length === 0) return [];
  const inserted = await trx
    .insertInto('integration_inbox')
    .values(rows.map((r) => ({ tenant_id: tenantId, id: r.id, connection_id: connectionId, dedupe_key: r.key, event_type: r.type, payload: JSON.stringify(r.payload) })))
    .onConflict((oc) => oc.columns(['tenant_id', 'connection_id', 'dedupe_key']).doNothing())
    .returning('id')
    .execute();
  return inserted.map((r) => r.id);
}

/** Claims a received inbox row (marks it processed); undefined when it is gone or was processed already. */
export async function claimInbox(trx: Trx, tenantId: string, id: string): Promise<{ connectionId: string; type: string; payload: Record<string, unknown> } | undefined> {
  const r = await trx
    .updateTable('integration_inbox')
    .set({ status: 'processed', processed_at: sql<Date>`now()` })
    .where('tenant_id', '=', tenantId)
    .where('id', '=', id)
    .where('status', '=', 'received')
    .returning(['connection_id', 'event_type', 'payload'])
    .executeTakeFirst();
  return r && { connectionId: r.connection_id, type: r.event_type, payload: r.payload as Record<string, unknown> };
}
