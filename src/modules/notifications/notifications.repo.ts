import { sql, type Selectable, type SqlBool, type Transaction, type UpdateObject } from 'kysely';
import type { Database, DB, DbScope } from '../../platform/db/database.ts';

/** The tables the notifications module owns; its repo sees only these. */
export type NotificationsTables = Pick<DB, 'webhook_endpoints' | 'webhook_deliveries'>;
/** Always inside a tenant transaction (RLS). */
export type Trx = Transaction<NotificationsTables>;

export function notificationsScope(db: Database): DbScope<NotificationsTables> {
  return db.scope('webhook_endpoints', 'webhook_deliveries');
}

export interface Webhook {
  id: string;
  url: string;
  description: string;
  events: string[];
  active: boolean;
  consecutiveFailures: number;
  disabledReason: string | null;
  createdAt: Date;
  updatedAt: Date;
}

export type DeliveryStatus = 'pending' | 'succeeded' | 'failed' | 'dead';

export interface Delivery {
  id: string;
  webhookId: string;
  eventId: string;
  eventType: string;
  status: DeliveryStatus;
  attempts: number;
  lastStatusCode: number | null;
  lastErrorKind: string | null;
  lastDurationMs: number | null;
  createdAt: Date;
  updatedAt: Date;
  deliveredAt: Date | null;
}

/** Public columns only: the secret's ciphertext is read solely by the sender (secretOf). */
const WEBHOOK_COLUMNS = ['id', 'url', 'description', 'events', 'active', 'consecutive_failures', 'disabled_reason', 'created_at', 'updated_at'] as const;
const DELIVERY_COLUMNS = [
  'id', 'webhook_id', 'event_id', 'event_type', 'status', 'attempts', 'last_status_code', 'last_error_kind',
  'last_duration_ms', 'created_at', 'updated_at', 'delivered_at',
] as const;
type WebhookRow = Pick<Selectable<DB['webhook_endpoints']>, (typeof WEBHOOK_COLUMNS)[number]>;
type DeliveryRow = Pick<Selectable<DB['webhook_deliveries']>, (typeof DELIVERY_COLUMNS)[number]>;

function toWebhook(r: WebhookRow): Webhook {
  return {
    id: r.id,
    url: r.url,
    description: r.description,
    events: r.events,
    active: r.active,
    consecutiveFailures: r.consecutive_failures,
    disabledReason: r.disabled_reason,
    createdAt: new Date(r.created_at),
    updatedAt: new Date(r.updated_at),
  };
}

function toDelivery(r: DeliveryRow): Delivery {
  return {
    id: r.id,
    webhookId: r.webhook_id,
    eventId: r.event_id,
    eventType: r.event_type,
    // the column's CHECK constraint admits only these
    status: r.status as DeliveryStatus,
    attempts: r.attempts,
    lastStatusCode: r.last_status_code,
    lastErrorKind: r.last_error_kind,
    lastDurationMs: r.last_duration_ms,
    createdAt: new Date(r.created_at),
    updatedAt: new Date(r.updated_at),
    deliveredAt: r.delivered_at === null ? null : new Date(r.delivered_at),
  };
}

export interface NewWebhook {
  tenantId: string;
  id: string;
  url: string;
  description: string;
  events: string[];
  active: boolean;
  secretCiphertext: string;
  createdBy: string | null;
}

export interface WebhookChanges {
  url?: string;
  description?: string;
  events?: string[];
  active?: boolean;
  /** Starts counting failed deliveries afresh (and clears the disabled reason). */
  resetFailures?: boolean;
}

export async function insertWebhook(trx: Trx, w: NewWebhook): Promise<Webhook> {
  const r = await trx
    .insertInto('webhook_endpoints')
    .values({
      tenant_id: w.tenantId,
      id: w.id,
      url: w.url,
      description: w.description,
      events: w.events,
      active: w.active,
      secret_ciphertext: w.secretCiphertext,
      created_by: w.createdBy,
    })
    .returning(WEBHOOK_COLUMNS)
    .executeTakeFirstOrThrow();
  return toWebhook(r);
}

export async function findWebhook(trx: Trx, tenantId: string, id: string, lock = false): Promise<Webhook | undefined> {
  let q = trx.selectFrom('webhook_endpoints').select(WEBHOOK_COLUMNS).where('tenant_id', '=', tenantId).where('id', '=', id);
  if (lock) q = q.forUpdate();
  const r = await q.executeTakeFirst();
  return r && toWebhook(r);
}

export async function listWebhooks(trx: Trx, tenantId: string, limit: number, afterId?: string): Promise<Webhook[]> {
  let q = trx.selectFrom('webhook_endpoints').select(WEBHOOK_COLUMNS).where('tenant_id', '=', tenantId).orderBy('id').limit(limit + 1);
  if (afterId) q = q.where('id', '>', afterId);
  return (await q.execute()).map(toWebhook);
}

export async function updateWebhook(trx: Trx, tenantId: string, id: string, c: WebhookChanges): Promise<Webhook | undefined> {
  const set: UpdateObject<NotificationsTables, 'webhook_endpoints'> = { updated_at: sql<Date>`now()` };
  if (c.url !== undefined) set.url = c.url;
  if (c.description !== undefined) set.description = c.description;
  if (c.events !== undefined) set.events = c.events;
  if (c.active !== undefined) set.active = c.active;
  if (c.resetFailures) Object.assign(set, { consecutive_failures: 0, disabled_reason: null });
  const r = await trx
    .updateTable('webhook_endpoints')
    .set(set)
    .where('tenant_id', '=', tenantId)
    .where('id', '=', id)
    .returning(WEBHOOK_COLUMNS)
    .executeTakeFirst();
  return r && toWebhook(r);
}

export async function deleteWebhook(trx: Trx, tenantId: string, id: string): Promise<boolean> {
  const r = await trx.deleteFrom('webhook_endpoints').where('tenant_id', '=', tenantId).where('id', '=', id).executeTakeFirst();
  return Number(r.numDeletedRows) > 0;
}

/** What the sender needs of an endpoint, the encrypted signing secret included. */
export async function endpointForSending(
  trx: Trx,
  tenantId: string,
  id: string,
): Promise<{ url: string; active: boolean; secretCiphertext: string } | undefined> {
  const r = await trx
    .selectFrom('webhook_endpoints')
    .select(['url', 'active', 'secret_ciphertext'])
    .where('tenant_id', '=', tenantId)
    .where('id', '=', id)
    .executeTakeFirst();
  return r && { url: r.url, active: r.active, secretCiphertext: r.secret_ciphertext };
}

/** Active endpoints of the tenant subscribed to `eventType` (GIN index on events). */
export async function subscribedEndpoints(trx: Trx, tenantId: string, eventType: string): Promise<string[]> {
  const rows = await trx
    .selectFrom('webhook_endpoints')
    .select('id')
    .where('tenant_id', '=', tenantId)
    .where('active', '=', true)
    .where(sql<SqlBool>`events @> array[${eventType}]::text[]`)
    .execute();
  return rows.map((r) => r.id);
}

/** Of these orgs, the ones with an active endpoint subscribed to the event type: one call (migration 0158, each lookup under its org's RLS context). */
export async function orgsSubscribed(db: Pick<Trx, 'getExecutor'>, orgIds: string[], eventType: string): Promise<Set<string>> {
  if (orgIds.length === 0) return new Set();
  const { rows } = await sql<{ org: string }>`select webhook_orgs_subscribed(${orgIds}::uuid[], ${eventType}) as org`.execute(db);
  return new Set(rows.map((r) => r.org));
}

/** Counts a finally failed delivery; at `disableAfter` deactivates the endpoint. Returns true when it did. */
export async function countFailure(trx: Trx, tenantId: string, id: string, disableAfter: number): Promise<boolean> {
  const r = await sql<{ disabled: boolean }>`
    update webhook_endpoints set
      consecutive_failures = consecutive_failures + 1,
      active = case when consecutive_failures + 1 >= ${disableAfter} then false else active end,
      disabled_reason = case when active and consecutive_failures + 1 >= ${disableAfter}
        then 'disabled after ' || (consecutive_failures + 1) || ' consecutive failed deliveries' else disabled_reason end,
      updated_at = now()
    where tenant_id = ${tenantId} and id = ${id}
    returning (active = false and consecutive_failures = ${disableAfter}) as disabled`.execute(trx);
  return r.rows[0]?.disabled ?? false;
}

export async function resetFailures(trx: Trx, tenantId: string, id: string): Promise<void> {
  await trx
    .updateTable('webhook_endpoints')
    .set({ consecutive_failures: 0 })
    .where('tenant_id', '=', tenantId)
    .where('id', '=', id)
    .where('consecutive_failures', '>', 0)
    .execute();
}

// ------------------------------------------------------------------------------------------ deliveries

export interface NewDelivery {
  tenantId: string;
  id: string;
  webhookId: string;
  eventId: string;
  eventType: string;
  /** the exact body sent, on every attempt */
  body: string;
}

/** One row per (endpoint, event); a duplicate fan-out inserts nothing. Returns the new rows' ids. */
export async function insertDeliveries(trx: Trx, rows: NewDelivery[]): Promise<string[]> {
  if (rows.length === 0) return [];
  const inserted = await trx
    .insertInto('webhook_deliveries')
    .values(rows.map((d) => ({ tenant_id: d.tenantId, id: d.id, webhook_id: d.webhookId, event_id: d.eventId, event_type: d.eventType, body: d.body })))
    .onConflict((oc) => oc.columns(['tenant_id', 'webhook_id', 'event_id']).doNothing())
    .returning('id')
    .execute();
  return inserted.map((r) => r.id);
}

export async function findDelivery(trx: Trx, tenantId: string, id: string): Promise<(Delivery & { body: string }) | undefined> {
  const r = await trx
    .selectFrom('webhook_deliveries')
    .select([...DELIVERY_COLUMNS, 'body'])
    .where('tenant_id', '=', tenantId)
    .where('id', '=', id)
    .executeTakeFirst();
  return r && { ...toDelivery(r), body: r.body };
}

export async function listDeliveries(trx: Trx, tenantId: string, webhookId: string, limit: number, beforeId?: string): Promise<Delivery[]> {
  let q = trx
    .selectFrom('webhook_deliveries')
    .select(DELIVERY_COLUMNS)
    .where('tenant_id', '=', tenantId)
    .where('webhook_id', '=', webhookId)
    .orderBy('id', 'desc')
    .limit(limit + 1);
  if (beforeId) q = q.where('id', '<', beforeId);
  return (await q.execute()).map(toDelivery);
}

export async function recordAttempt(
  trx: Trx,
  tenantId: string,
  id: string,
  a: { status: DeliveryStatus; statusCode: number | null; errorKind: string | null; durationMs: number },
): Promise<void> {
  await trx
    .updateTable('webhook_deliveries')
    .set({
      status: a.status,
      attempts: sql<number>`attempts + 1`,
      last_status_code: a.statusCode,
      last_error_kind: a.errorKind,
      last_duration_ms: a.durationMs,
      updated_at: sql<Date>`now()`,
      ...(a.status === 'succeeded' ? { delivered_at: sql<Date>`now()` } : {}),
    })
    .where('tenant_id', '=', tenantId)
    .where('id', '=', id)
    .execute();
}

export async function reopenDelivery(trx: Trx, tenantId: string, id: string): Promise<Delivery | undefined> {
  const r = await trx
    .updateTable('webhook_deliveries')
    .set({ status: 'pending', updated_at: sql<Date>`now()` })
    .where('tenant_id', '=', tenantId)
    .where('id', '=', id)
    .returning(DELIVERY_COLUMNS)
    .executeTakeFirst();
  return r && toDelivery(r);
}
