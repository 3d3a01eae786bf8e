import type { TenantActorContext } from '../../platform/http/actor.ts';
import { catalogUseCases, type CatalogUseCases } from './use-cases/catalog.ts';
import { createBillingContext, type BillingContext, type BillingDeps } from './use-cases/context.ts';
import { entitlementUseCases, type EntitlementUseCases } from './use-cases/entitlements.ts';
import { subscriptionUseCases, type SubscriptionUseCases } from './use-cases/subscriptions.ts';
import { testClockUseCases, type TestClockUseCases } from './use-cases/test-clock.ts';
import { quotaUseCases, type QuotaUseCases } from './use-cases/quotas.ts';
import { usageUseCases, type UsageUseCases } from './use-cases/usage.ts';

export type { BillingConfig, BillingDeps } from './use-cases/context.ts';

/** The use cases of the billing module, one file per aggregate under use-cases/. */
export interface BillingService extends CatalogUseCases, SubscriptionUseCases, EntitlementUseCases, UsageUseCases, TestClockUseCases, QuotaUseCases {}

export function createBillingService(deps: BillingDeps): { service: BillingService; context: BillingContext } {
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
      ...usage,
      ...quotaUseCases(context, entitlements, usage),
      ...testClockUseCases(context, refreshing(s.advance)),
    },
    context,
  };
}
