import type { Logger } from 'pino';
import { asPlugin } from '../../platform/http/module-routes.ts';
import type { ModuleSurface } from '../../platform/module.ts';
import type { GatewayName, PaymentGateway } from './billing.gateway.ts';
import { registerBillingJobs, registerBillingMailJobs, registerInvoiceJobs, type BillingPaymentJobs } from './billing.jobs.ts';
import { addonRoutes } from './addons.routes.ts';
import { invoicingScope } from './invoices.repo.ts';
import { billingRoutes } from './billing.routes.ts';
import { invoiceRoutes } from './billing.invoice-routes.ts';
import { createBillingService, type BillingDeps, type BillingService } from './billing.service.ts';
import { paymentWebhookRoutes } from './billing.webhooks.routes.ts';
import { paymentEventsScope } from './payment-events.repo.ts';
import { paymentWebhooks, sandboxWebhookVerifier, stripeWebhookVerifier, type PaymentUpdates, type WebhookVerifier } from './use-cases/payment-webhooks.ts';
import { paymentReconciliation, type ReconciliationReport } from './use-cases/reconciliation.ts';

export { BILLING_PERMISSIONS } from './billing.routes.ts';
export { BILLING_EVENTS } from './billing.events.ts';
export type * from './billing.events.ts';
export { DEFAULT_BILLING_CONFIG } from './use-cases/context.ts';
export type { BillingConfig, BillingDeps, BillingService } from './billing.service.ts';
export type { EntitlementSnapshot } from './use-cases/entitlements.ts';
export type { Subscription, SubscriptionStatus, Customer, Charge } from './subscriptions.repo.ts';
export type { Plan, Price, Product, Meter, EntitlementSpec } from './billing.repo.ts';
export { GatewayRequestError, GatewayUnavailableError } from './billing.gateway.ts';
export type { GatewayName, GatewayPayment, GatewayPaymentStatus, GatewayFailureCode, GatewayRefund, PaymentGateway } from './billing.gateway.ts';
export { createStripeGateway, type StripeGatewayOptions } from './billing.gateway-stripe.ts';
export { guardedGateway } from './billing.gateway-guard.ts';
export { signSandboxWebhook } from './use-cases/payment-webhooks.ts';
export type { PaymentUpdates, GatewayPaymentUpdate, ReconciliationAttempt } from './use-cases/payment-webhooks.ts';
export type { ReconciliationReport, Drift } from './use-cases/reconciliation.ts';
export { allocate, currencyExponent, formatMoney, portionAt, prorate, type Money } from './billing.money.ts';
// ---- invoices and payments (issue #14)
export { createGateway, stripeGateway } from './billing.gateways.ts';
export { createSandboxGateway, SANDBOX_CARDS, type SandboxGateway } from './billing.gateway-sandbox.ts';
export type { Invoice, InvoiceLine, InvoiceStatus, CreditNote, Coupon, PromotionCode, TaxRate } from './invoices.repo.ts';
export type { PaymentAttempt, PaymentMethod } from './payments.repo.ts';
export type { GatewayUpdateResult } from './use-cases/payments.ts';
export type { InvoiceView, Mismatch } from './use-cases/invoices.ts';
export type { TaxProvider, TaxLocation } from './billing.tax.ts';
export { DEFAULT_PAYMENTS_CONFIG } from './use-cases/dunning.ts';
export { runBillingCommand } from './billing.cli.ts';
export { amountFor, type Pricing } from './billing.pricing.ts';

/** The billing facade: catalog, subscriptions, entitlements, usage metering, test clocks. */
export interface BillingModule extends ModuleSurface, BillingService {
  /** One reconciliation run now (what the `billing.payments_reconcile` schedule runs); absent without payments. */
  reconcilePayments?: (now?: Date) => Promise<ReconciliationReport>;
}

/** Payments behind the gateway port (issue #14): gateways, incoming webhooks, reconciliation. */
export interface BillingPaymentsDeps {
  logger: Logger;
  /** Guarded gateways by name (guardedGateway over platform.policies.payment). */
  gateways: Partial<Record<GatewayName, PaymentGateway>>;
  /** The gateway of attempts that do not name one. */
  defaultGateway: GatewayName;
  /** Webhook signing secrets by gateway: a gateway without one answers 404 on its webhook route. */
  webhookSecrets: Partial<Record<GatewayName, string>>;
  webhookToleranceSec: number;
  /** The payment attempts. Default: the billing service itself once it implements PaymentUpdates. */
  updates?: PaymentUpdates;
  reconcile?: { everyMs?: number; pageSize?: number; lookbackMs?: number };
}

const hasPaymentUpdates = (s: object): s is PaymentUpdates =>
  typeof (s as Partial<PaymentUpdates>).applyGatewayPaymentUpdate === 'function' && typeof (s as Partial<PaymentUpdates>).listPaymentAttemptsForReconciliation === 'function';

/** Until payment attempts exist, webhooks stay in the inbox (their job retries) and reconciliation finds nothing. */
const UNWIRED_PAYMENT_UPDATES: PaymentUpdates = {
  applyGatewayPaymentUpdate: async () => {
    throw new Error('payment attempts are not wired (BillingPaymentsDeps.updates)');
  },
  listPaymentAttemptsForReconciliation: async () => [],
};

function createPayments(deps: BillingDeps, p: BillingPaymentsDeps, service: object) {
  const updates = p.updates ?? (hasPaymentUpdates(service) ? service : UNWIRED_PAYMENT_UPDATES);
  const verifiers: Partial<Record<GatewayName, WebhookVerifier>> = {};
  if (p.webhookSecrets.stripe) verifiers.stripe = stripeWebhookVerifier(p.webhookSecrets.stripe, p.webhookToleranceSec);
  if (p.webhookSecrets.sandbox) verifiers.sandbox = sandboxWebhookVerifier(p.webhookSecrets.sandbox, p.webhookToleranceSec);
  const webhooks = paymentWebhooks({ scope: paymentEventsScope(deps.db), events: deps.events, logger: p.logger, verifiers, updates });
  const reconciliation = paymentReconciliation({ updates, gateways: p.gateways, defaultGateway: p.defaultGateway, logger: p.logger, pageSize: p.reconcile?.pageSize, lookbackMs: p.reconcile?.lookbackMs });
  const jobs: BillingPaymentJobs = { webhooks, reconciliation, reconcileEveryMs: p.reconcile?.everyMs };
  return { webhooks, reconciliation, jobs };
}

export function createBilling(deps: BillingDeps, payments?: BillingPaymentsDeps): BillingModule {
  const { service, context, mail } = createBillingService(deps);
  const pay = payments ? createPayments(deps, payments, service) : undefined;
  return {
    ...service,
    name: 'billing',
    routes: [
      { name: 'billing', prefix: '/v1', plugin: asPlugin(billingRoutes(service)) },
      { name: 'billing-invoices', prefix: '/v1', plugin: asPlugin(invoiceRoutes(service)) },
      { name: 'billing-addons', prefix: '/v1', plugin: asPlugin(addonRoutes(service)) },
      ...(pay ? [{ name: 'billing-payment-webhooks', prefix: '/v1', plugin: asPlugin((app) => paymentWebhookRoutes(app, { webhooks: pay.webhooks })) }] : []),
    ],
    registerJobs: (jobs) => {
      registerBillingJobs(jobs, service, pay?.jobs);
      registerBillingMailJobs(jobs, mail, context.scope);
      registerInvoiceJobs(jobs, service, { mailer: deps.mailer, scope: invoicingScope(deps.db) });
    },
    ...(pay ? { reconcilePayments: (now?: Date) => pay.reconciliation.run(now) } : {}),
  };
}
