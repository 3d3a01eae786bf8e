import { sql, type Transaction } from 'kysely';

type Trx = Transaction<any>;

export interface Webhook {
  id: string;
  url: string;
  description: string;
  events: string[];
  active: boolean;
  consecutiveFailures: number;
  disabledReason: string | null;
  createdAt: string;
  updatedAt: string;
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
  createdAt: string;
  updatedAt: string;
  deliveredAt: string | null;
}

const iso = (d: Date | string | null) => (d === null ? null : new Date(d).toISOString());

export function toWebhook(r: any): Webhook {
  return {
    id: r.id,
    url: r.url,
    description: r.description,
    events: r.events,
    active: r.active,
    consecutiveFailures: r.consecutive_failures,
    disabledReason: r.disabled_reason,
    createdAt: iso(r.created_at)!,
    updatedAt: iso(r.updated_at)!,
  };
}

export function toDelivery(r: any): Delivery {
  return {
    id: r.id,
    webhookId: r.webhook_id,
    eventId: r.event_id,
    eventType: r.event_type,
    status: r.status,
    attempts: r.attempts,
    lastStatusCode: r.last_status_code,
    lastErrorKind: r.last_error_kind,
    lastDurationMs: r.last_duration_ms,
    createdAt: iso(r.created_at)!,
    updatedAt: iso(r.updated_at)!,
    deliveredAt: iso(r.delivered_at),
  };
}

/** Public columns only: the secret's ciphertext is read solely by the sender (secretOf). */
const WEBHOOK_COLUMNS = ['id', 'url', 'description', 'events', 'active', 'consecutive_failures', 'disabled_reason', 'created_at', 'updated_at'] as const;
const DELIVERY_COLUMNS = [
  'id', 'webhook_id', 'event_id', 'event_type', 'status', 'attempts', 'last_status_code', 'last_error_kind',
  'last_duration_ms', 'created_at', 'updated_at', 'delivered_at',
] as const;

export const webhooksRepo = {
  async insert(trx: Trx, row: Record<string, unknown>): Promise<Webhook> {
    return toWebhook(await trx.insertInto('webhook_endpoints').values(row).returning(WEBHOOK_COLUMNS).executeTakeFirstOrThrow());
  },
  async find(trx: Trx, tenantId: string, id: string, lock = false): Promise<Webhook | undefined> {
    let q = trx.selectFrom('webhook_endpoints').select(WEBHOOK_COLUMNS).where('tenant_id', '=', tenantId).where('id', '=', id);
    if (lock) q = q.forUpdate();
    const r = await q.executeTakeFirst();
    return r && toWebhook(r);
  },
  async list(trx: Trx, tenantId: string, limit: number, afterId?: string): Promise<Webhook[]> {
    let q = trx.selectFrom('webhook_endpoints').select(WEBHOOK_COLUMNS).where('tenant_id', '=', tenantId).orderBy('id').limit(limit + 1);
    if (afterId) q = q.where('id', '>', afterId);
    return (await q.execute()).map(toWebhook);
  },
  async update(trx: Trx, tenantId: string, id: string, set: Record<string, unknown>): Promise<Webhook | undefined> {
    const r = await trx
      .updateTable('webhook_endpoints')
      .set({ ...set, updated_at: sql`now()` })
      .where('tenant_id', '=', tenantId)
      .where('id', '=', id)
      .returning(WEBHOOK_COLUMNS)
      .executeTakeFirst();
    return r && toWebhook(r);
  },
  async remove(trx: Trx, tenantId: string, id: string): Promise<boolean> {
    const r = await trx.deleteFrom('webhook_endpoints').where('tenant_id', '=', tenantId).where('id', '=', id).executeTakeFirst();
    return Number(r.numDeletedRows) > 0;
  },
  async secretOf(trx: Trx, tenantId: string, id: string): Promise<{ url: string; active: boolean; secret_ciphertext: string } | undefined> {
    return trx
      .selectFrom('webhook_endpoints')
      .select(['url', 'active', 'secret_ciphertext'])
      .where('tenant_id', '=', tenantId)
      .where('id', '=', id)
      .executeTakeFirst();
  },
  /** Active endpoints of the tenant subscribed to `eventType` (GIN index on events). */
  async subscribers(trx: Trx, tenantId: string, eventType: string): Promise<string[]> {
    const rows = await trx
      .selectFrom('webhook_endpoints')
      .select('id')
      .where('tenant_id', '=', tenantId)
      .where('active', '=', true)
      .where(sql<boolean>`events @> array[${eventType}]::text[]`)
      .execute();
    return rows.map((r: any) => r.id);
  },
  /** Counts a finally failed delivery; at `disableAfter` deactivates the endpoint. Returns true when it did. */
  async countFailure(trx: Trx, tenantId: string, id: string, disableAfter: number): Promise<boolean> {
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
  },
  async resetFailures(trx: Trx, tenantId: string, id: string): Promise<void> {
    await trx
      .updateTable('webhook_endpoints')
      .set({ consecutive_failures: 0 })
      .where('tenant_id', '=', tenantId)
      .where('id', '=', id)
      .where('consecutive_failures', '>', 0)
      .execute();
  },

  // ---------------------------------------------------------------------------------------- deliveries
  /** One row per (endpoint, event); a duplicate fan-out inserts nothing. Returns the new rows' ids. */
  async insertDeliveries(trx: Trx, rows: Array<Record<string, unknown>>): Promise<string[]> {
    if (rows.length === 0) return [];
    const inserted = await trx
      .insertInto('webhook_deliveries')
      .values(rows)
      .onConflict((oc) => oc.columns(['tenant_id', 'webhook_id', 'event_id']).doNothing())
      .returning('id')
      .execute();
    return inserted.map((r: any) => r.id);
  },
  async findDelivery(trx: Trx, tenantId: string, id: string): Promise<(Delivery & { body: string }) | undefined> {
    const r = await trx
      .selectFrom('webhook_deliveries')
      .select([...DELIVERY_COLUMNS, 'body'])
      .where('tenant_id', '=', tenantId)
      .where('id', '=', id)
      .executeTakeFirst();
    return r && { ...toDelivery(r), body: (r as any).body };
  },
  async listDeliveries(trx: Trx, tenantId: string, webhookId: string, limit: number, beforeId?: string): Promise<Delivery[]> {
    let q = trx
      .selectFrom('webhook_deliveries')
      .select(DELIVERY_COLUMNS)
      .where('tenant_id', '=', tenantId)
      .where('webhook_id', '=', webhookId)
      .orderBy('id', 'desc')
      .limit(limit + 1);
    if (beforeId) q = q.where('id', '<', beforeId);
    return (await q.execute()).map(toDelivery);
  },
  async recordAttempt(
    trx: Trx,
    tenantId: string,
    id: string,
    a: { status: DeliveryStatus; statusCode: number | null; errorKind: string | null; durationMs: number },
  ): Promise<void> {
    await trx
      .updateTable('webhook_deliveries')
      .set({
        status: a.status,
        attempts: sql`attempts + 1`,
        last_status_code: a.statusCode,
        last_error_kind: a.errorKind,
        last_duration_ms: a.durationMs,
        updated_at: sql`now()`,
        ...(a.status === 'succeeded' ? { delivered_at: sql`now()` } : {}),
      })
      .where('tenant_id', '=', tenantId)
      .where('id', '=', id)
      .execute();
  },
  async reopenDelivery(trx: Trx, tenantId: string, id: string): Promise<Delivery | undefined> {
    const r = await trx
      .updateTable('webhook_deliveries')
      .set({ status: 'pending', updated_at: sql`now()` })
      .where('tenant_id', '=', tenantId)
      .where('id', '=', id)
      .returning(DELIVERY_COLUMNS)
      .executeTakeFirst();
    return r && toDelivery(r);
  },
};
