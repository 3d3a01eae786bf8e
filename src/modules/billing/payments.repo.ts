import { sql, type Selectable } from 'kysely';
import type { DB } from '../../platform/db/database.ts';
import type { GatewayPaymentStatus } from './billing.gateway.ts';
import type { IQ, ITrx } from './invoices.repo.ts';

const num = (v: string | number | null | undefined): number => (v === null || v === undefined ? 0 : Number(v));

export interface PaymentMethod {
  gateway: string;
  gatewayCustomerId: string;
  paymentMethodId: string;
  brand: string | null;
  last4: string | null;
  updatedAt: Date;
}

export async function findPaymentMethod(trx: ITrx, tenantId: string): Promise<PaymentMethod | undefined> {
  const r = await trx.selectFrom('billing_payment_methods').selectAll().where('tenant_id', '=', tenantId).executeTakeFirst();
  return r && { gateway: r.gateway, gatewayCustomerId: r.gateway_customer_id, paymentMethodId: r.payment_method_id, brand: r.brand ?? null, last4: r.last4 ?? null, updatedAt: r.updated_at };
}

export async function upsertPaymentMethod(trx: ITrx, tenantId: string, m: Omit<PaymentMethod, 'updatedAt'>): Promise<PaymentMethod> {
  const values = { gateway: m.gateway, gateway_customer_id: m.gatewayCustomerId, payment_method_id: m.paymentMethodId, brand: m.brand, last4: m.last4 };
  const r = await trx
    .insertInto('billing_payment_methods')
    .values({ tenant_id: tenantId, ...values })
    .onConflict((oc) => oc.column('tenant_id').doUpdateSet({ ...values, updated_at: sql<Date>`now()` }))
    .returningAll()
    .executeTakeFirstOrThrow();
  return { gateway: r.gateway, gatewayCustomerId: r.gateway_customer_id, paymentMethodId: r.payment_method_id, brand: r.brand ?? null, last4: r.last4 ?? null, updatedAt: r.updated_at };
}

export type AttemptStatus = GatewayPaymentStatus;

export interface PaymentAttempt {
  id: string;
  invoiceId: string;
  attemptNo: number;
  idempotencyKey: string;
  gateway: string;
  gatewayPaymentId: string | null;
  status: AttemptStatus;
  failureCode: string | null;
  failureMessage: string | null;
  amount: number;
  currency: string;
  createdAt: Date;
  updatedAt: Date;
}

const toAttempt = (r: Selectable<DB['billing_payment_attempts']>): PaymentAttempt => ({
  id: r.id,
  invoiceId: r.invoice_id,
  attemptNo: r.attempt_no,
  idempotencyKey: r.idempotency_key,
  gateway: r.gateway,
  gatewayPaymentId: r.gateway_payment_id ?? null,
  status: r.status as AttemptStatus,
  failureCode: r.failure_code ?? null,
  failureMessage: r.failure_message ?? null,
  amount: num(r.amount),
  currency: r.currency,
  createdAt: r.created_at,
  updatedAt: r.updated_at,
});

export async function countAttempts(trx: ITrx, tenantId: string, invoiceId: string): Promise<number> {
  const r = await trx.selectFrom('billing_payment_attempts').select(sql<string>`count(*)`.as('n')).where('tenant_id', '=', tenantId).where('invoice_id', '=', invoiceId).executeTakeFirstOrThrow();
  return num(r.n);
}

export async function insertAttempt(trx: ITrx, tenantId: string, a: Omit<PaymentAttempt, 'createdAt' | 'updatedAt'>, now: Date): Promise<PaymentAttempt> {
  const r = await trx
    .insertInto('billing_payment_attempts')
    .values({
      tenant_id: tenantId,
      id: a.id,
      invoice_id: a.invoiceId,
      attempt_no: a.attemptNo,
      idempotency_key: a.idempotencyKey,
      gateway: a.gateway,
      gateway_payment_id: a.gatewayPaymentId,
      status: a.status,
      failure_code: a.failureCode,
      failure_message: a.failureMessage,
      amount: a.amount,
      currency: a.currency,
    })
    .returningAll()
    .executeTakeFirstOrThrow();
  await indexAttempt(trx, tenantId, a.id, now);
  return toAttempt(r);
}

export async function updateAttempt(trx: ITrx, tenantId: string, id: string, c: { status: AttemptStatus; failureCode: string | null; failureMessage?: string | null }): Promise<PaymentAttempt> {
  const r = await trx
    .updateTable('billing_payment_attempts')
    .set({ status: c.status, failure_code: c.failureCode, failure_message: c.failureMessage ?? null, updated_at: sql<Date>`now()` })
    .where('tenant_id', '=', tenantId)
    .where('id', '=', id)
    .returningAll()
    .executeTakeFirstOrThrow();
  await indexAttempt(trx, tenantId, id, new Date());
  return toAttempt(r);
}

async function indexAttempt(trx: ITrx, tenantId: string, attemptId: string, at: Date): Promise<void> {
  await trx
    .insertInto('billing_payment_index')
    .values({ tenant_id: tenantId, attempt_id: attemptId, updated_at: at })
    .onConflict((oc) => oc.columns(['tenant_id', 'attempt_id']).doUpdateSet({ updated_at: at }))
    .execute();
}

export async function findAttemptByGatewayId(trx: ITrx, tenantId: string, gatewayPaymentId: string): Promise<PaymentAttempt | undefined> {
  const r = await trx.selectFrom('billing_payment_attempts').selectAll().where('tenant_id', '=', tenantId).where('gateway_payment_id', '=', gatewayPaymentId).forUpdate().executeTakeFirst();
  return r && toAttempt(r);
}

export async function findAttempt(trx: ITrx, tenantId: string, id: string): Promise<PaymentAttempt | undefined> {
  const r = await trx.selectFrom('billing_payment_attempts').selectAll().where('tenant_id', '=', tenantId).where('id', '=', id).executeTakeFirst();
  return r && toAttempt(r);
}

export async function listAttempts(trx: ITrx, tenantId: string, opts: { limit: number; before?: string; invoiceId?: string; status?: AttemptStatus }): Promise<PaymentAttempt[]> {
  let q = trx.selectFrom('billing_payment_attempts').selectAll().where('tenant_id', '=', tenantId);
  if (opts.before) q = q.where('id', '<', opts.before);
  if (opts.invoiceId) q = q.where('invoice_id', '=', opts.invoiceId);
  if (opts.status) q = q.where('status', '=', opts.status);
  return (await q.orderBy('id', 'desc').limit(opts.limit).execute()).map(toAttempt);
}

export async function listAttemptsByIds(trx: ITrx, tenantId: string, ids: string[]): Promise<PaymentAttempt[]> {
  if (ids.length === 0) return [];
  return (await trx.selectFrom('billing_payment_attempts').selectAll().where('tenant_id', '=', tenantId).where('id', 'in', ids).execute()).map(toAttempt);
}

/** Attempts changed since `since`, across orgs, oldest change first (no tenant data: ids and time only). */
/** Keyset-paged by attempt id (ids are time-ordered per invoice), so a page boundary never skips or repeats. */
export async function indexedSince(app: IQ, since: Date, limit: number, after?: string): Promise<Array<{ tenantId: string; attemptId: string; updatedAt: Date }>> {
  let q = app
    .selectFrom('billing_payment_index')
    .select(['tenant_id', 'attempt_id', 'updated_at'])
    .where('updated_at', '>=', since);
  if (after) q = q.where('attempt_id', '>', after);
  const rows = await q.orderBy('attempt_id').limit(limit).execute();
  return rows.map((r) => ({ tenantId: r.tenant_id, attemptId: r.attempt_id, updatedAt: r.updated_at }));
}

// ---------------------------------------------------------------- dunning schedule (global index)

export async function scheduleDunning(trx: ITrx, tenantId: string, invoiceId: string, dueAt: Date | null, onTestClock: boolean): Promise<void> {
  if (dueAt === null) {
    await trx.deleteFrom('billing_dunning_schedule').where('tenant_id', '=', tenantId).where('invoice_id', '=', invoiceId).execute();
    return;
  }
  await trx
    .insertInto('billing_dunning_schedule')
    .values({ tenant_id: tenantId, invoice_id: invoiceId, due_at: dueAt, on_test_clock: onTestClock })
    .onConflict((oc) => oc.columns(['tenant_id', 'invoice_id']).doUpdateSet({ due_at: dueAt, on_test_clock: onTestClock }))
    .execute();
}

/** Due by the wall clock (orgs on a test clock are run by their clock). */
export async function dueDunning(app: IQ, now: Date, limit: number): Promise<Array<{ tenantId: string; invoiceId: string }>> {
  const rows = await app
    .selectFrom('billing_dunning_schedule')
    .select(['tenant_id', 'invoice_id'])
    .where('due_at', '<=', now)
    .where('on_test_clock', '=', false)
    .orderBy('due_at')
    .limit(limit)
    .execute();
  return rows.map((r) => ({ tenantId: r.tenant_id, invoiceId: r.invoice_id }));
}

/** One org's entries due by its own clock. */
export async function dueDunningForOrg(trx: ITrx, tenantId: string, now: Date): Promise<string[]> {
  const rows = await trx.selectFrom('billing_dunning_schedule').select('invoice_id').where('tenant_id', '=', tenantId).where('due_at', '<=', now).orderBy('due_at').execute();
  return rows.map((r) => r.invoice_id);
}

export async function setDunningClock(trx: ITrx, tenantId: string, onTestClock: boolean): Promise<void> {
  await trx.updateTable('billing_dunning_schedule').set({ on_test_clock: onTestClock }).where('tenant_id', '=', tenantId).execute();
}
