import { createHash } from 'node:crypto';
import type { Logger } from 'pino';
import type { TxHandle } from '../../../platform/db/database.ts';
import type { ActorContext, TenantActorContext } from '../../../platform/http/actor.ts';
import { systemActor } from '../../../platform/http/actor.ts';
import { newId } from '../../../platform/ids.ts';
import { gatewayUnavailable, invalidInvoiceState, invoiceNotFound, paymentMethodRefused } from '../billing.errors.ts';
import { BILLING_EVENTS, type PaymentEventPayload } from '../billing.events.ts';
import { GatewayRequestError, type GatewayPayment, type GatewayPaymentStatus, type PaymentGateway } from '../billing.gateway.ts';
import type { Invoice, ITrx } from '../invoices.repo.ts';
import * as repo from '../invoices.repo.ts';
import { asBilling } from '../invoices.repo.ts';
import * as pay from '../payments.repo.ts';
import type { PaymentAttempt, PaymentMethod } from '../payments.repo.ts';
import * as subs from '../subscriptions.repo.ts';
import type { BillingContext } from './context.ts';
import type { Dunning } from './dunning.ts';
import { invoicePayload, type InvoiceView, type InvoicingCore } from './invoices.ts';

/** What an incoming payment webhook or reconciliation learned about a payment at the gateway. */
export interface GatewayPaymentUpdate {
  gatewayPaymentId: string;
  status: GatewayPaymentStatus;
  failureCode?: string | null;
  amount: number;
  metadata: Record<string, string>;
}

export interface GatewayUpdateResult {
  /** false: unknown payment, a duplicate, or an update older than what is recorded (nothing changed). */
  applied: boolean;
  reason?: 'unknown_payment' | 'stale' | 'duplicate';
  attemptId?: string;
  invoiceId?: string;
  invoiceStatus?: string;
}

export interface ReconciliationAttempt {
  orgId: string;
  invoiceId: string;
  attemptId: string;
  gatewayPaymentId: string | null;
  gateway: string;
  status: GatewayPaymentStatus;
  amount: number;
  currency: string;
  updatedAt: Date;
}

export interface PaymentUseCases {
  /** Attaches a payment method (a gateway token; sandbox: a test card number or token) as the org's default. */
  setPaymentMethod(ctx: TenantActorContext, token: string): Promise<PaymentMethod>;
  getPaymentMethod(orgId: string): Promise<PaymentMethod | null>;
  listPayments(orgId: string, opts: { limit: number; before?: string; invoiceId?: string }): Promise<PaymentAttempt[]>;
  /** Collects a finalized invoice now (a manual retry). */
  payInvoice(ctx: TenantActorContext, invoiceId: string): Promise<InvoiceView>;
  /**
   * For incoming payment webhooks and reconciliation: moves an attempt (and its invoice) to what the gateway
   * says. Idempotent; tolerates duplicates and any order — status only moves forward (processing /
   * requires_action → failed / canceled → succeeded), so a late `failed` never un-pays a `succeeded`.
   */
  applyGatewayPaymentUpdate(orgId: string, update: GatewayPaymentUpdate, trx?: TxHandle): Promise<GatewayUpdateResult>;
  /**
   * Attempts changed since `since`, across orgs, for comparing with the gateway: ordered by attemptId,
   * at most `limit`, after the keyset cursor `after` (an attemptId).
   */
  listPaymentAttemptsForReconciliation(opts: { since: Date; limit: number; after?: string }): Promise<ReconciliationAttempt[]>;
  /** Outbox consumer of billing.invoice_finalized: the first collection, in the handler's transaction. */
  collectForEvent(trx: TxHandle, orgId: string, invoiceId: string): Promise<void>;
  /** Dunning steps due by the wall clock (the billing.dunning schedule); returns how many ran. */
  runDunningDue(ctx: ActorContext, limit: number): Promise<number>;
  /** Dunning steps of one org due by its clock (the test clock runs them as it advances). */
  runDunningForOrg(ctx: TenantActorContext): Promise<number>;
}

const RANK: Record<GatewayPaymentStatus, number> = { processing: 0, requires_action: 0, failed: 1, canceled: 1, succeeded: 2 };

/**
 * A stable id per (invoice, attempt): the same on a retried call, so the gateway request (and its key) is
 * identical. Time-ordered like the invoice's UUIDv7 (its 48-bit time prefix, then the attempt number), so
 * ids sort by invoice, then attempt.
 */
export function attemptIdOf(invoiceId: string, attemptNo: number): string {
  const ts = invoiceId.replace(/-/g, '').slice(0, 12);
  const no = Math.min(attemptNo, 0xfff).toString(16).padStart(3, '0');
  const h = createHash('sha256').update(`${invoiceId}:${attemptNo}`).digest('hex');
  const variant = ((parseInt(h.slice(0, 2), 16) & 0x3f) | 0x80).toString(16);
  return `${ts.slice(0, 8)}-${ts.slice(8, 12)}-7${no}-${variant}${h.slice(2, 4)}-${h.slice(4, 16)}`;
}

export const idempotencyKeyOf = (invoiceId: string, attemptNo: number) => `plinth_invoice_${invoiceId}_attempt_${attemptNo}`;

export function paymentUseCases(c: BillingContext, core: InvoicingCore, dunning: Dunning, gateway: PaymentGateway, logger?: Logger): PaymentUseCases {
  const { scope } = core;
  const sys = (orgId: string, who = 'billing.payments'): TenantActorContext => ({ ...systemActor(who), tenantId: orgId });

  function paymentPayload(inv: Invoice, a: PaymentAttempt, plan?: { nextAttemptAt: Date | null; finalAction: 'cancel' | 'downgrade' | null; finalActionAt: Date | null }): PaymentEventPayload {
    return {
      invoiceId: inv.id,
      invoiceNumber: inv.number,
      attemptId: a.id,
      attemptNo: a.attemptNo,
      gateway: a.gateway,
      gatewayPaymentId: a.gatewayPaymentId,
      status: a.status,
      amount: a.amount,
      currency: a.currency,
      failureCode: a.failureCode,
      nextPaymentAttemptAt: plan?.nextAttemptAt?.toISOString() ?? null,
      finalAction: plan?.finalAction ?? null,
      finalActionAt: plan?.finalActionAt?.toISOString() ?? null,
    };
  }

  async function onSuccess(trx: ITrx, ctx: TenantActorContext, inv: Invoice, a: PaymentAttempt, now: Date, onTestClock: boolean): Promise<Invoice> {
    let updated = inv;
    if (inv.status === 'finalized' || inv.status === 'uncollectible') {
      const amountPaid = inv.amountPaid + a.amount;
      const paid = amountPaid >= inv.amountDue;
      updated = await repo.updateInvoice(trx, ctx.tenantId, inv.id, { amountPaid, ...(paid ? { status: 'paid', paidAt: now, nextPaymentAttemptAt: null } : {}) });
      if (paid) await pay.scheduleDunning(trx, ctx.tenantId, inv.id, null, onTestClock);
      await core.record(trx, ctx, 'billing.invoice.payment_succeeded', inv.id, { attemptNo: a.attemptNo, amount: a.amount, gatewayPaymentId: a.gatewayPaymentId });
      await core.publish(trx, ctx, BILLING_EVENTS.paymentSucceeded, paymentPayload(updated, a));
      if (paid) await core.publish(trx, ctx, BILLING_EVENTS.invoicePaid, invoicePayload(updated));
      if (paid) await dunning.recover(trx, ctx, onTestClock);
    } else {
      // Money arrived for a voided invoice: recorded on the attempt; an operator refunds or credits it.
      logger?.warn({ orgId: ctx.tenantId, invoiceId: inv.id, status: inv.status, gatewayPaymentId: a.gatewayPaymentId }, 'payment succeeded for an invoice that is not collectible');
    }
    return updated;
  }

  async function onFailure(trx: ITrx, ctx: TenantActorContext, inv: Invoice, a: PaymentAttempt, now: Date, onTestClock: boolean): Promise<Invoice> {
    if (inv.status !== 'finalized') return inv;
    const failures = inv.attemptCount + 1;
    const plan = dunning.planAfterFailure(inv, failures, now);
    const updated = await repo.updateInvoice(trx, ctx.tenantId, inv.id, { attemptCount: failures, nextPaymentAttemptAt: plan.nextAttemptAt });
    await dunning.schedule(trx, ctx.tenantId, inv.id, plan, onTestClock);
    await core.record(trx, ctx, 'billing.invoice.payment_failed', inv.id, { attemptNo: a.attemptNo, failureCode: a.failureCode });
    await core.publish(trx, ctx, BILLING_EVENTS.paymentFailed, paymentPayload(updated, a, plan));
    await dunning.markPastDue(trx, ctx, now, onTestClock);
    return updated;
  }

  /**
   * One collection attempt of a finalized invoice, in the caller's transaction (customer and invoice locked).
   * The gateway call carries a key derived from (invoice, attempt number): the attempt row commits only with
   * its outcome, so after a crash between the call and the commit the same attempt runs again with the same
   * key and the gateway answers with the payment it already made — never a second charge.
   */
  async function collect(trx: ITrx, ctx: TenantActorContext, inv: Invoice): Promise<Invoice> {
    const owed = inv.amountDue - inv.amountPaid;
    if (inv.status !== 'finalized' || owed <= 0) return inv;
    const { now, onTestClock } = await c.clockNow(asBilling(trx), ctx.tenantId);
    const attemptNo = (await pay.countAttempts(trx, ctx.tenantId, inv.id)) + 1;
    const attemptId = attemptIdOf(inv.id, attemptNo);
    const key = idempotencyKeyOf(inv.id, attemptNo);
    const method = await pay.findPaymentMethod(trx, ctx.tenantId);
    const base = { id: attemptId, invoiceId: inv.id, attemptNo, idempotencyKey: key, amount: owed, currency: inv.currency };
    let attempt: PaymentAttempt;
    if (!method) {
      attempt = await pay.insertAttempt(trx, ctx.tenantId, { ...base, gateway: gateway.name, gatewayPaymentId: null, status: 'failed', failureCode: 'no_payment_method', failureMessage: 'The organization has no payment method' }, now);
    } else {
      let payment: GatewayPayment | undefined;
      let refused: GatewayRequestError | undefined;
      try {
        payment = await gateway.charge(
          {
            gatewayCustomerId: method.gatewayCustomerId,
            paymentMethodId: method.paymentMethodId,
            amount: owed,
            currency: inv.currency,
            description: `Invoice ${inv.number ?? inv.id}`,
            metadata: { orgId: ctx.tenantId, invoiceId: inv.id, attemptId, attemptNo: String(attemptNo) },
          },
          key,
        );
      } catch (err) {
        if (!(err instanceof GatewayRequestError)) throw err;
        refused = err;
      }
      attempt = await pay.insertAttempt(
        trx,
        ctx.tenantId,
        {
          ...base,
          gateway: gateway.name,
          gatewayPaymentId: payment?.gatewayPaymentId ?? null,
          status: payment?.status ?? 'failed',
          failureCode: payment?.failureCode ?? (refused ? refused.code : null),
          failureMessage: payment?.failureMessage ?? refused?.message ?? null,
          amount: payment?.amount ?? owed,
        },
        now,
      );
    }
    if (attempt.status === 'succeeded') return onSuccess(trx, ctx, inv, attempt, now, onTestClock);
    if (attempt.status === 'processing') return inv;
    return onFailure(trx, ctx, inv, attempt, now, onTestClock);
  }

  /** One due dunning step of an invoice: a retry, or (retries exhausted, grace over) the final action. */
  async function dunningStep(trx: ITrx, ctx: TenantActorContext, invoiceId: string): Promise<void> {
    await subs.lockCustomer(asBilling(trx), ctx.tenantId);
    const { now, onTestClock } = await c.clockNow(asBilling(trx), ctx.tenantId);
    const inv = await repo.findInvoice(trx, ctx.tenantId, invoiceId, { forUpdate: true });
    if (!inv || inv.status !== 'finalized') {
      await pay.scheduleDunning(trx, ctx.tenantId, invoiceId, null, onTestClock);
      return;
    }
    const pending = await pay.listAttempts(trx, ctx.tenantId, { limit: 1, invoiceId, status: 'processing' });
    if (pending.length > 0) {
      // An async payment still settling: ask the gateway instead of charging again.
      const p = await gateway.retrievePayment(pending[0]!.gatewayPaymentId!);
      await applyUpdate(trx, ctx, { gatewayPaymentId: p.gatewayPaymentId, status: p.status, failureCode: p.failureCode ?? null, amount: p.amount, metadata: p.metadata });
      const after = (await repo.findInvoice(trx, ctx.tenantId, invoiceId))!;
      if (after.status === 'finalized' && p.status === 'processing') await pay.scheduleDunning(trx, ctx.tenantId, invoiceId, new Date(now.getTime() + 3_600_000), onTestClock);
      return;
    }
    if (inv.attemptCount <= dunning.config.dunningRetryDays.length) {
      await collect(trx, ctx, inv);
      return;
    }
    const updated = await repo.updateInvoice(trx, ctx.tenantId, inv.id, { status: 'uncollectible', uncollectibleAt: now, nextPaymentAttemptAt: null });
    await pay.scheduleDunning(trx, ctx.tenantId, invoiceId, null, onTestClock);
    const action = await dunning.finalAction(trx, ctx, now, onTestClock);
    await core.record(trx, ctx, 'billing.invoice.mark_uncollectible', inv.id, { number: inv.number, by: 'dunning', subscription: action });
    await core.publish(trx, ctx, BILLING_EVENTS.invoiceUncollectible, { ...invoicePayload(updated), finalAction: action });
  }

  async function applyUpdate(trx: ITrx, ctx: TenantActorContext, u: GatewayPaymentUpdate): Promise<GatewayUpdateResult> {
    const attempt = (await pay.findAttemptByGatewayId(trx, ctx.tenantId, u.gatewayPaymentId)) ?? (u.metadata.attemptId ? await pay.findAttempt(trx, ctx.tenantId, u.metadata.attemptId) : undefined);
    if (!attempt || (attempt.gatewayPaymentId !== null && attempt.gatewayPaymentId !== u.gatewayPaymentId)) return { applied: false, reason: 'unknown_payment' };
    if (attempt.status === u.status) return { applied: false, reason: 'duplicate', attemptId: attempt.id, invoiceId: attempt.invoiceId };
    if (RANK[u.status] <= RANK[attempt.status]) return { applied: false, reason: 'stale', attemptId: attempt.id, invoiceId: attempt.invoiceId };
    const { now, onTestClock } = await c.clockNow(asBilling(trx), ctx.tenantId);
    const updated = await pay.updateAttempt(trx, ctx.tenantId, attempt.id, { status: u.status, failureCode: u.failureCode ?? null });
    let inv = (await repo.findInvoice(trx, ctx.tenantId, attempt.invoiceId, { forUpdate: true }))!;
    if (u.status === 'succeeded') inv = await onSuccess(trx, ctx, inv, { ...updated, amount: u.amount }, now, onTestClock);
    // A failure counts once: requires_action was already counted when the charge answered it.
    else if (attempt.status === 'processing') inv = await onFailure(trx, ctx, inv, updated, now, onTestClock);
    return { applied: true, attemptId: attempt.id, invoiceId: inv.id, invoiceStatus: inv.status };
  }

  return {
    async setPaymentMethod(ctx, token) {
      const customer = await scope.withTenant(ctx.tenantId, (trx) => subs.lockCustomer(asBilling(trx), ctx.tenantId));
      const existing = await scope.withTenant(ctx.tenantId, (trx) => pay.findPaymentMethod(trx, ctx.tenantId));
      const tokenHash = createHash('sha256').update(token).digest('hex').slice(0, 32);
      let attached: { gatewayCustomerId: string; paymentMethodId: string; brand: string | null; last4: string | null };
      try {
        const gatewayCustomerId =
          existing?.gateway === gateway.name
            ? existing.gatewayCustomerId
            : (await gateway.createCustomer({ orgId: ctx.tenantId, email: customer.email, name: customer.name }, `plinth_customer_${ctx.tenantId}`)).gatewayCustomerId;
        const pm = await gateway.attachPaymentMethod({ gatewayCustomerId, paymentMethod: token }, `plinth_pm_${ctx.tenantId}_${tokenHash}`);
        attached = { gatewayCustomerId, ...pm };
      } catch (err) {
        if (err instanceof GatewayRequestError) throw paymentMethodRefused(err.message, err.code);
        throw gatewayUnavailable();
      }
      return scope.withTenant(ctx.tenantId, async (trx) => {
        await subs.lockCustomer(asBilling(trx), ctx.tenantId);
        const { now, onTestClock } = await c.clockNow(asBilling(trx), ctx.tenantId);
        const m = await pay.upsertPaymentMethod(trx, ctx.tenantId, { gateway: gateway.name, ...attached });
        await c.record(asBilling(trx), ctx, 'billing.payment_method.set', { type: 'billing_payment_method', id: ctx.tenantId }, { brand: m.brand, last4: m.last4 });
        // Unpaid invoices are retried with the new method at the next dunning run (by the org's clock).
        const unpaid = await repo.listInvoices(trx, ctx.tenantId, { limit: 50, status: 'finalized' });
        for (const inv of unpaid) await pay.scheduleDunning(trx, ctx.tenantId, inv.id, now, onTestClock);
        return m;
      });
    },
    async getPaymentMethod(orgId) {
      return scope.withTenantRead(orgId, async (trx) => (await pay.findPaymentMethod(trx, orgId)) ?? null);
    },
    async listPayments(orgId, opts) {
      return scope.withTenantRead(orgId, (trx) => pay.listAttempts(trx, orgId, opts));
    },
    async payInvoice(ctx, invoiceId) {
      try {
        return await scope.withTenant(ctx.tenantId, async (trx) => {
          await subs.lockCustomer(asBilling(trx), ctx.tenantId);
          const inv = await repo.findInvoice(trx, ctx.tenantId, invoiceId, { forUpdate: true });
          if (!inv) throw invoiceNotFound();
          if (inv.status !== 'finalized') throw invalidInvoiceState(inv.status, 'paid');
          return core.view(trx, ctx.tenantId, await collect(trx, ctx, inv));
        });
      } catch (err) {
        if (err instanceof Error && (err.name === 'GatewayUnavailableError' || err.name === 'BrokenCircuitError' || err.name === 'TaskCancelledError' || err.name === 'BulkheadRejectedError')) throw gatewayUnavailable();
        throw err;
      }
    },
    async applyGatewayPaymentUpdate(orgId, update, handle) {
      const apply = async (trx: Parameters<typeof applyUpdate>[0]) => {
        await subs.lockCustomer(asBilling(trx), orgId);
        return applyUpdate(trx, sys(orgId, 'billing.gateway_update'), update);
      };
      // A webhook job passes its own transaction (already the org's tenant): the update commits with the
      // inbox row's status (and a second connection would wait forever on the embedded database's one).
      return handle ? apply(scope.join(handle)) : scope.withTenant(orgId, apply);
    },
    async listPaymentAttemptsForReconciliation({ since, limit, after }) {
      const rows = await pay.indexedSince(scope.app, since, limit, after);
      const byOrg = new Map<string, string[]>();
      for (const r of rows) byOrg.set(r.tenantId, [...(byOrg.get(r.tenantId) ?? []), r.attemptId]);
      const out: ReconciliationAttempt[] = [];
      for (const [orgId, ids] of byOrg) {
        const attempts = await scope.withTenantRead(orgId, (trx) => pay.listAttemptsByIds(trx, orgId, ids));
        for (const a of attempts) out.push({ orgId, invoiceId: a.invoiceId, attemptId: a.id, gatewayPaymentId: a.gatewayPaymentId, gateway: a.gateway, status: a.status, amount: a.amount, currency: a.currency, updatedAt: a.updatedAt });
      }
      return out.sort((a, b) => (a.attemptId < b.attemptId ? -1 : a.attemptId > b.attemptId ? 1 : 0));
    },
    async collectForEvent(handle, orgId, invoiceId) {
      const trx = scope.join(handle);
      await subs.lockCustomer(asBilling(trx), orgId);
      const inv = await repo.findInvoice(trx, orgId, invoiceId, { forUpdate: true });
      // Already collected (a redelivery after commit), voided meanwhile, or zero: nothing to do.
      if (!inv || inv.status !== 'finalized' || inv.attemptCount > 0) return;
      if ((await pay.countAttempts(trx, orgId, invoiceId)) > 0) return;
      await collect(trx, sys(orgId), inv);
    },
    async runDunningDue(ctx, limit) {
      const due = await pay.dueDunning(scope.app, new Date(), limit);
      let ran = 0;
      for (const d of due) {
        try {
          await scope.withTenant(d.tenantId, (trx) => dunningStep(trx, { ...ctx, tenantId: d.tenantId }, d.invoiceId));
          ran++;
        } catch (err) {
          // Gateway unreachable: the step stays due and runs again on the next tick (same attempt, same key).
          logger?.warn({ err, orgId: d.tenantId, invoiceId: d.invoiceId }, 'dunning step failed; retried on the next run');
        }
      }
      return ran;
    },
    async runDunningForOrg(ctx) {
      const due = await scope.withTenant(ctx.tenantId, async (trx) => {
        const { now } = await c.clockNow(asBilling(trx), ctx.tenantId);
        return pay.dueDunningForOrg(trx, ctx.tenantId, now);
      });
      for (const invoiceId of due) await scope.withTenant(ctx.tenantId, (trx) => dunningStep(trx, ctx, invoiceId));
      return due.length;
    },
  };
}

export { newId };
