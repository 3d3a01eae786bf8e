import { asPlugin } from '../../platform/http/module-routes.ts';
import type { ModuleSurface } from '../../platform/module.ts';
import { registerBillingJobs, registerInvoiceJobs } from './billing.jobs.ts';
import { invoicingScope } from './invoices.repo.ts';
import { billingRoutes } from './billing.routes.ts';
import { invoiceRoutes } from './billing.invoice-routes.ts';
import { createBillingService, type BillingDeps, type BillingService } from './billing.service.ts';

export { BILLING_PERMISSIONS } from './billing.routes.ts';
export { BILLING_EVENTS } from './billing.events.ts';
export type * from './billing.events.ts';
export { DEFAULT_BILLING_CONFIG } from './use-cases/context.ts';
export type { BillingConfig, BillingDeps, BillingService } from './billing.service.ts';
export type { EntitlementSnapshot } from './use-cases/entitlements.ts';
export type { Subscription, SubscriptionStatus, Customer, Charge } from './subscriptions.repo.ts';
export type { Plan, Price, Product, Meter, EntitlementSpec } from './billing.repo.ts';
export { allocate, currencyExponent, formatMoney, portionAt, prorate, type Money } from './billing.money.ts';
// ---- invoices and payments (issue #14)
export { createGateway } from './billing.gateways.ts';
export { createSandboxGateway, SANDBOX_CARDS, type SandboxGateway } from './billing.gateway-sandbox.ts';
export { GatewayRequestError, GatewayUnavailableError, type PaymentGateway, type GatewayPayment, type GatewayPaymentStatus, type GatewayFailureCode, type GatewayRefund, type GatewayName } from './billing.gateway.ts';
export type { Invoice, InvoiceLine, InvoiceStatus, CreditNote, Coupon, PromotionCode, TaxRate } from './invoices.repo.ts';
export type { PaymentAttempt, PaymentMethod } from './payments.repo.ts';
export type { GatewayPaymentUpdate, GatewayUpdateResult, ReconciliationAttempt } from './use-cases/payments.ts';
export type { InvoiceView, Mismatch } from './use-cases/invoices.ts';
export type { TaxProvider, TaxLocation } from './billing.tax.ts';
export { DEFAULT_PAYMENTS_CONFIG } from './use-cases/dunning.ts';
export { runBillingCommand } from './billing.cli.ts';

/** The billing facade: catalog, subscriptions, entitlements, usage metering, test clocks. */
export interface BillingModule extends ModuleSurface, BillingService {
}

export function createBilling(deps: BillingDeps): BillingModule {
  const { service } = createBillingService(deps);
  return {
    ...service,
    name: 'billing',
    routes: [
      { name: 'billing', prefix: '/v1', plugin: asPlugin(billingRoutes(service)) },
      { name: 'billing-invoices', prefix: '/v1', plugin: asPlugin(invoiceRoutes(service)) },
    ],
    registerJobs: (jobs) => {
      registerBillingJobs(jobs, service);
      registerInvoiceJobs(jobs, service, { mailer: deps.mailer, scope: invoicingScope(deps.db) });
    },
  };
}
