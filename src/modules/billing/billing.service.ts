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

export type { BillingConfig, BillingDeps } from './use-cases/context.ts';

/** The use cases of the billing module, one file per aggregate under use-cases/. */
export interface BillingService extends CatalogUseCases, SubscriptionUseCases, EntitlementUseCases, UsageUseCases, TestClockUseCases, QuotaUseCases, AddonUseCases {}

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
      ...testClockUseCases(context, refreshing(s.advance)),
    },
    context,
    mail,
  };
}
