import { sql, type QueryExecutorProvider, type Selectable } from 'kysely';
import type { DB } from '../../platform/db/database.ts';
import type { OutboxRow } from '../../platform/outbox/publisher.ts';
import { normalizeNumeric, toDiscount, type CustomerDiscount, type UsageWindow, type InvoiceLine, type InvoiceReason, type IQ, type ITrx, type DiscountSnapshot, type TaxSnapshot } from './invoices.repo.ts';
import { toCharge, toCustomer, toSubscription, type Charge, type Customer, type Subscription } from './subscriptions.repo.ts';

/**
 * The invoice run's SQL (use-cases/invoice-run.ts): the queue of renewed periods (global, id-only, read across
 * orgs), one statement that loads and locks everything an org's invoice needs, and one that writes the
 * finalized invoice — number, lines, claimed charges and usage cursor — so a batch costs a few statements per
 * org instead of ~28. Tenant tables are only touched inside the org's tenant context (RLS).
 */

export interface QueuedPeriod {
  tenantId: string;
  subscriptionId: string;
  periodEnd: Date;
}

/** Queues an org's renewed period for the invoice run (in the renewal's transaction); a period is queued once. */
export async function enqueueInvoice(trx: QueryExecutorProvider, tenantId: string, subscriptionId: string, periodEnd: Date): Promise<void> {
  await sql`
    insert into billing_invoice_queue (tenant_id, subscription_id, period_end)
    values (${tenantId}, ${subscriptionId}, ${periodEnd})
    on conflict (tenant_id, subscription_id, period_end) do nothing`.execute(trx);
}

/** Rows whose batch failed this often are left for an operator (logged by the run each time they fail). */
export const MAX_QUEUE_ATTEMPTS = 10;

/**
 * Claims up to `limit` queued periods, oldest first, locked until the caller's transaction ends (SKIP LOCKED:
 * runners never take the same row), returned in tenant order so every batch locks customers in one order.
 */
export async function claimQueued(trx: QueryExecutorProvider, limit: number, tenantId?: string, skip: string[] = []): Promise<QueuedPeriod[]> {
  const only = tenantId ? sql`and tenant_id = ${tenantId}` : skip.length > 0 ? sql`and tenant_id <> all(${skip}::uuid[])` : sql``;
  const r = await sql<{ tenant_id: string; subscription_id: string; period_end: Date }>`
    select tenant_id, subscription_id, period_end from billing_invoice_queue
    where done_at is null and attempts < ${MAX_QUEUE_ATTEMPTS} ${only}
    order by enqueued_at limit ${limit}
    for update skip locked`.execute(trx);
  return r.rows
    .map((x) => ({ tenantId: x.tenant_id, subscriptionId: x.subscription_id, periodEnd: new Date(x.period_end) }))
    .sort((a, b) => (a.tenantId < b.tenantId ? -1 : a.tenantId > b.tenantId ? 1 : 0));
}

/** Marks claimed periods invoiced (the invoice that covered them, or null when nothing was owed). */
export async function markQueueDone(trx: QueryExecutorProvider, rows: Array<QueuedPeriod & { invoiceId: string | null }>): Promise<void> {
  if (rows.length === 0) return;
  await sql`
    update billing_invoice_queue q set done_at = now(), invoice_id = x.invoice_id
    from unnest(${rows.map((r) => r.tenantId)}::uuid[], ${rows.map((r) => r.subscriptionId)}::uuid[], ${rows.map((r) => r.periodEnd.toISOString())}::timestamptz[], ${rows.map((r) => r.invoiceId)}::uuid[])
      as x(tenant_id, subscription_id, period_end, invoice_id)
    where q.tenant_id = x.tenant_id and q.subscription_id = x.subscription_id and q.period_end = x.period_end`.execute(trx);
}

/** A failed period: counted, with the error, so a row that always fails stops being retried at MAX_QUEUE_ATTEMPTS. */
export async function markQueueFailed(trx: QueryExecutorProvider, row: QueuedPeriod, error: string): Promise<void> {
  await sql`
    update billing_invoice_queue set attempts = attempts + 1, last_error = ${error.slice(0, 1000)}
    where tenant_id = ${row.tenantId} and subscription_id = ${row.subscriptionId} and period_end = ${row.periodEnd}`.execute(trx);
}

/** Invoiced periods older than `before` are forgotten (a period is renewed once; redeliveries come within days). */
export async function pruneQueue(trx: QueryExecutorProvider, before: Date): Promise<void> {
  await sql`delete from billing_invoice_queue where done_at < ${before}`.execute(trx);
}

/** Pending periods (tests, operators). */
export async function countQueued(trx: QueryExecutorProvider): Promise<number> {
  const r = await sql<{ n: string }>`select count(*)::text as n from billing_invoice_queue where done_at is null`.execute(trx);
  return Number(r.rows[0]?.n ?? 0);
}

export interface OrgInvoicingState {
  customer: Customer;
  subscription: Subscription | undefined;
  /** Open charges (not on an invoice yet), by id, at most 1,000 (as `openCharges`). */
  charges: Charge[];
  /** The usage cursors of that subscription, by metric. */
  cursors: Map<string, { billedTo: Date; cutoff: Date }>;
  discount: CustomerDiscount | undefined;
  hasBalance: boolean;
  hasTestClock: boolean;
}

const DATE_KEYS = new Set([
  'created_at', 'updated_at', 'anchor_at', 'current_period_start', 'current_period_end', 'trial_end', 'canceled_at',
  'paused_at', 'past_due_since', 'period_start', 'period_end', 'started_at', 'ends_at', 'billed_to', 'cutoff',
]);

/** A row read back from to_jsonb: timestamps become Dates again (everything else maps as the driver would). */
function row<T>(o: Record<string, unknown>): T {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(o)) out[k] = DATE_KEYS.has(k) && typeof v === 'string' ? new Date(v) : v;
  return out as T;
}

interface StateRow {
  customer: object;
  sub: object | null;
  charges: object[];
  cursors: object[] | null;
  discount: object | null;
  has_balance: boolean;
  has_clock: boolean;
}

function toState(x: StateRow): OrgInvoicingState {
  const cursors = new Map<string, { billedTo: Date; cutoff: Date }>();
  for (const u of x.cursors ?? []) {
    const c = row<{ metric: string; billed_to: Date; cutoff: Date }>(u as Record<string, unknown>);
    cursors.set(c.metric, { billedTo: c.billed_to, cutoff: c.cutoff });
  }
  return {
    customer: toCustomer(row<Selectable<DB['billing_customers']>>(x.customer as Record<string, unknown>)),
    subscription: x.sub ? toSubscription(row<Selectable<DB['billing_subscriptions']>>(x.sub as Record<string, unknown>)) : undefined,
    charges: x.charges.map((ch) => toCharge(row<Selectable<DB['billing_charges']>>(ch as Record<string, unknown>))),
    cursors,
    discount: x.discount ? toDiscount(row<Selectable<DB['billing_customer_discounts']>>(x.discount as Record<string, unknown>)) : undefined,
    hasBalance: x.has_balance,
    hasTestClock: x.has_clock,
  };
}

/**
 * Everything each org's next invoice needs, for a whole batch in one round trip (`billing_invoice_run_load`,
 * migration 0156): org by org in the given order, in that org's tenant context (RLS), its customer row locked
 * FOR UPDATE (the lock every billing change of the org takes first), its latest subscription (as
 * `findLatestSubscription`), open charges, that subscription's usage cursors, the active discount, and whether
 * a credit balance or a test clock exists. Orgs without a customer row are absent from the result. Leaves the
 * tenant context cleared.
 */
export async function loadInvoicingStates(trx: ITrx, orgs: string[]): Promise<Map<string, OrgInvoicingState>> {
  const out = new Map<string, OrgInvoicingState>();
  if (orgs.length === 0) return out;
  const r = await sql<{ org: string; state: StateRow }>`select org, state from billing_invoice_run_load(${orgs}::uuid[])`.execute(trx);
  for (const x of r.rows) out.set(x.org, toState(x.state));
  return out;
}

/**
 * `aggregateUsage` for many orgs' windows in one round trip (`billing_invoice_run_usage`): each in its org's
 * tenant context, the same aggregate, count and hash (not for `time_weighted_sum`: that stays on `aggregateUsage`).
 */
export async function aggregateUsageBatch(trx: ITrx, windows: Array<{ org: string; window: UsageWindow }>): Promise<Map<string, { value: string; events: number; hash: string }>> {
  const out = new Map<string, { value: string; events: number; hash: string }>();
  if (windows.length === 0) return out;
  if (windows.some((w) => w.window.aggregation === 'time_weighted_sum')) throw new Error('invoice run: time-weighted windows are aggregated one by one');
  if (new Set(windows.map((w) => w.org)).size !== windows.length) throw new Error('invoice run: one usage window per org and batch');
  const json = JSON.stringify(
    windows.map(({ org, window: w }) => ({
      org, metric: w.metric, aggregation: w.aggregation, property: w.property ?? '', lower_bound: w.lowerBound, from: w.from, to: w.to,
      cutoff: w.cutoff, previous_cutoff: w.previousCutoff,
    })),
  );
  const r = await sql<{ org: string; value: string; events: string; hash: string }>`select org, value, events::text, hash from billing_invoice_run_usage(${json}::jsonb)`.execute(trx);
  for (const x of r.rows) out.set(x.org, { value: normalizeNumeric(x.value), events: Number(x.events), hash: x.hash });
  return out;
}

export interface FinalizedInvoiceWrite {
  id: string;
  reason: InvoiceReason;
  subscriptionId: string | null;
  currency: string;
  periodStart: Date;
  periodEnd: Date;
  usageCutoff: Date;
  customer: Record<string, unknown>;
  discount: DiscountSnapshot | null;
  tax: TaxSnapshot | null;
  subtotal: number;
  discountTotal: number;
  taxTotal: number;
  total: number;
  amountDue: number;
  finalizedAt: Date;
  /** amountDue 0: paid at once. */
  paid: boolean;
  /** Lines with their discount and tax amounts. */
  lines: InvoiceLine[];
  chargeIds: string[];
  /** The usage cursor moved to the window's end, when the invoice covered a usage window. */
  cursor: { subscriptionId: string; metric: string; billedTo: Date; cutoff: Date } | null;
  /** Number prefix: the org id's last 8 hex digits. */
  numberPrefix: string;
}

/** One org's part of a batch write: its finalized invoice (or only its usage cursor), audit rows and outbox rows. */
export interface BatchWriteItem {
  org: string;
  /** Null: nothing owed, only the usage cursor moves. */
  invoice: FinalizedInvoiceWrite | null;
  cursor: FinalizedInvoiceWrite['cursor'];
  /** Pending audit rows (the audit module's `pendingRow`); a `number` key in `changes` gets the assigned number. */
  audit: object[];
  /** Outbox rows (from `outboxEnvelope`, which checked them); a `number` key in the payload gets the assigned number. */
  events: OutboxRow[];
}

/**
 * The batch's finalized invoices with their audit records and outbox events, in one round trip
 * (`billing_invoice_run_write`, migration 0156): org by org in its tenant context (RLS: every row must be the
 * org's), the next gap-free number (its sequence row, locked until the transaction ends; a rollback takes the
 * number back), invoice, lines, claimed charges (the call fails when a charge was claimed meanwhile: the
 * caller holds the customer locks, so that is a bug and the batch must not commit), usage cursor, audit rows
 * and events. Leaves the tenant context cleared.
 */
export async function writeBatch(trx: ITrx, items: BatchWriteItem[]): Promise<Map<string, { invoiceId: string; seq: number; number: string; createdAt: Date }>> {
  const out = new Map<string, { invoiceId: string; seq: number; number: string; createdAt: Date }>();
  if (items.length === 0) return out;
  const cursorJson = (c: FinalizedInvoiceWrite['cursor']) => (c ? { subscription_id: c.subscriptionId, metric: c.metric, billed_to: c.billedTo, cutoff: c.cutoff } : null);
  const json = JSON.stringify(
    items.map(({ org, invoice: w, cursor, audit, events }) => ({
      org,
      cursor: cursorJson(cursor),
      audit,
      events,
      number_prefix: w?.numberPrefix ?? null,
      charge_ids: w?.chargeIds ?? [],
      lines: (w?.lines ?? []).map((l) => ({
        id: l.id, position: l.position, kind: l.kind, description: l.description, charge_id: l.chargeId, subscription_id: l.subscriptionId,
        price_id: l.priceId, price_version: l.priceVersion, quantity: l.quantity, unit_amount: l.unitAmount, amount: l.amount,
        discount_amount: l.discountAmount, tax_amount: l.taxAmount, period_start: l.periodStart, period_end: l.periodEnd, computation: l.computation,
      })),
      invoice: w
        ? {
            id: w.id, status: w.paid ? 'paid' : 'finalized', reason: w.reason, subscription_id: w.subscriptionId, currency: w.currency,
            period_start: w.periodStart, period_end: w.periodEnd, customer: w.customer, usage_cutoff: w.usageCutoff, discount: w.discount, tax: w.tax,
            subtotal: w.subtotal, discount_total: w.discountTotal, tax_total: w.taxTotal, total: w.total, amount_due: w.amountDue,
            finalized_at: w.finalizedAt, paid_at: w.paid ? w.finalizedAt : null,
          }
        : null,
    })),
  );
  const r = await sql<{ org: string; invoice_id: string; seq: string; number: string; created_at: Date }>`
    select org, invoice_id, seq::text, number, created_at from billing_invoice_run_write(${json}::jsonb)`.execute(trx);
  for (const x of r.rows) out.set(x.org, { invoiceId: x.invoice_id, seq: Number(x.seq), number: x.number, createdAt: new Date(x.created_at) });
  return out;
}

/** Which orgs have invoices (global, for `plinth billing verify`): one statement for a whole batch. */
export async function noteInvoiceOrgs(q: IQ | ITrx | QueryExecutorProvider, tenantIds: string[], at: Date): Promise<void> {
  if (tenantIds.length === 0) return;
  await sql`
    insert into billing_invoice_orgs (tenant_id, last_finalized_at)
    select t, ${at} from unnest(${[...new Set(tenantIds)].sort()}::uuid[]) t
    on conflict (tenant_id) do update set last_finalized_at = excluded.last_finalized_at`.execute(q as QueryExecutorProvider);
}
