import type { TenantActorContext } from '../../platform/http/actor.ts';
import { catalogUseCases, type CatalogUseCases } from './use-cases/catalog.ts';
import { createBillingContext, type BillingContext, type BillingDeps } from './use-cases/context.ts';
import { entitlementUseCases, type EntitlementUseCases } from './use-cases/entitlements.ts';
import { subscriptionUseCases, type SubscriptionUseCases } from './use-cases/subscriptions.ts';
import { testClockUseCases, type TestClockUseCases } from './use-cases/test-clock.ts';
import { runWithUnitOfWorkSlot } from '../../platform/db/unit-of-work.ts';
import { AppError } from '../../platform/http/errors.ts';
import { addonUseCases, type AddonUseCases } from './use-cases/add-ons.ts';
import { billingMail, type BillingMail } from './use-cases/billing-mail.ts';
import { quotaUseCases, type QuotaUseCases } from './use-cases/quotas.ts';
import { usageUseCases, type UsageUseCases } from './use-cases/usage.ts';
import { createSandboxGateway } from './billing.gateway-sandbox.ts';
import { GatewayRequestError } from './billing.gateway.ts';
import { createDunning, DEFAULT_PAYMENTS_CONFIG } from './use-cases/dunning.ts';
import { createInvoicingCore, invoiceUseCases, type InvoiceUseCases } from './use-cases/invoices.ts';
import { invoiceDocumentUseCases, type InvoiceDocumentUseCases } from './use-cases/invoice-documents.ts';
import { paymentUseCases, type PaymentUseCases } from './use-cases/payments.ts';
import { invoiceRunUseCases, type InvoiceRunUseCases } from './use-cases/invoice-run.ts';
import { pruneQueue } from './invoice-run.repo.ts';
import * as pay from './payments.repo.ts';

export type { BillingConfig, BillingDeps } from './use-cases/context.ts';

/** The use cases of the billing module, one file per aggregate under use-cases/. */
export interface BillingService extends CatalogUseCases, SubscriptionUseCases, EntitlementUseCases, UsageUseCases, TestClockUseCases, QuotaUseCases, AddonUseCases, InvoiceUseCases, PaymentUseCases, InvoiceDocumentUseCases, InvoiceRunUseCases {
  /** Forgets invoiced queue rows older than `before`. */
  pruneInvoiceQueue(before: Date): Promise<void>;
}

export function createBillingService(deps: BillingDeps): { service: BillingService; context: BillingContext; mail: BillingMail } {
  const context = createBillingContext(deps);
  const subscriptions = subscriptionUseCases(context);
  const entitlements = entitlementUseCases(context);
  // Each change's invalidation is owed through the outbox (billing.entitlements_changed); this lands it
  // at once after commit in the common case, so the caller's next request already sees the new plan.
  const refreshing =
    <A extends [TenantActorContext, ...unknown[]], R>(fn: (...args: A) => Promise<R>) =>
    async (...args: A): Promise<R> => {
      const result = await fn(...args);
      await entitlements.refresh(args[0].tenantId);
      return result;
    };
  const s = subscriptions;
  const usage = usageUseCases(context, entitlements);
  const mail = billingMail(context, deps.mailer);
  const addons = addonUseCases(context);
  // A refused limit is noted once per limit and period (the limit-reached e-mail), after the refusal and
  // outside the request's unit of work (which rolls back with the 402).
  const limitCheck: EntitlementUseCases['limitCheck'] = async (orgId, limit) => {
    const check = await entitlements.limitCheck(orgId, limit);
    return (current: number) => {
      try {
        check(current);
      } catch (err) {
        if (err instanceof AppError && err.code === 'BILLING.LIMIT_EXCEEDED') {
          const allowed = Number(err.context.allowed ?? 0);
          setImmediate(() => void runWithUnitOfWorkSlot(() => mail.noteLimitReached(orgId, limit, allowed, current)).catch(() => {}));
        }
        throw err;
      }
    };
  };
  // ---- invoices and payments (issue #14)
  const payConfig = deps.payments ?? DEFAULT_PAYMENTS_CONFIG;
  const gateway = deps.gateway ?? createSandboxGateway();
  const core = createInvoicingCore(context);
  const dunning = createDunning(context, payConfig);
  const payments = paymentUseCases(context, core, dunning, gateway);
  const invoices = invoiceUseCases(context, core, async (ctx, trx, invoice, amount, creditNoteId) => {
    const paid = (await pay.listAttempts(trx, ctx.tenantId, { limit: 20, invoiceId: invoice.id, status: 'succeeded' })).find((a) => a.gatewayPaymentId);
    if (!paid) throw new GatewayRequestError('the invoice has no succeeded payment to refund', gateway.name, 'no_payment');
    const r = await gateway.refund({ gatewayPaymentId: paid.gatewayPaymentId!, amount, metadata: { orgId: ctx.tenantId, invoiceId: invoice.id, creditNoteId } }, `plinth_credit_note_${creditNoteId}`);
    return r.gatewayRefundId;
  });
  // The test clock runs what is due by the org's clock: Billing I's transitions, then dunning steps.
  const advanceWithDunning = async (ctx: TenantActorContext, first?: Parameters<SubscriptionUseCases['advance']>[1]) => {
    const sub = await refreshing(s.advance)(ctx, first);
    if ((await payments.runDunningForOrg(ctx)) > 0) await entitlements.refresh(ctx.tenantId);
    return sub;
  };
  return {
    service: {
      ...catalogUseCases(context),
      ...subscriptions,
      subscribe: refreshing(s.subscribe),
      changePlan: refreshing(s.changePlan),
      cancel: refreshing(s.cancel),
      pause: refreshing(s.pause),
      resume: refreshing(s.resume),
      syncSeats: refreshing(s.syncSeats),
      advance: refreshing(s.advance),
      ...entitlements,
      limitCheck,
      ...addons,
      setAddon: refreshing(addons.setAddon),
      ...usage,
      ...quotaUseCases(context, entitlements, usage),
      ...testClockUseCases(context, advanceWithDunning),
      ...invoices,
      ...payments,
      ...invoiceDocumentUseCases(context, core, payConfig),
      ...invoiceRunUseCases(context, core),
      pruneInvoiceQueue: (before) => pruneQueue(deps.db.app, before),
    },
    context,
    mail,
  };
}
