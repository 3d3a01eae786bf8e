import { asPlugin } from '../../platform/http/module-routes.ts';
import type { ModuleSurface } from '../../platform/module.ts';
import { registerBillingJobs } from './billing.jobs.ts';
import { billingRoutes } from './billing.routes.ts';
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
export { amountFor, type Pricing } from './billing.pricing.ts';

/** The billing facade: catalog, subscriptions, entitlements, usage metering, test clocks. */
export interface BillingModule extends ModuleSurface, BillingService {
}

export function createBilling(deps: BillingDeps): BillingModule {
  const { service } = createBillingService(deps);
  return {
    ...service,
    name: 'billing',
    routes: [{ name: 'billing', prefix: '/v1', plugin: asPlugin(billingRoutes(service)) }],
    registerJobs: (jobs) => registerBillingJobs(jobs, service),
  };
}
