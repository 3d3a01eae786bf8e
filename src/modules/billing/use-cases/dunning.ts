import { createHash } from 'node:crypto';
import type { PaymentsConfig } from '../../../platform/config.ts';
import type { TenantActorContext } from '../../../platform/http/actor.ts';
import { addDays } from '../billing.calendar.ts';
import { BILLING_EVENTS, type SubscriptionEventPayload } from '../billing.events.ts';
import { currencyExponent } from '../billing.money.ts';
import { amountFor } from '../billing.pricing.ts';
import * as catalog from '../billing.repo.ts';
import type { Invoice, ITrx } from '../invoices.repo.ts';
import { asBilling } from '../invoices.repo.ts';
import { scheduleDunning } from '../payments.repo.ts';
import * as subs from '../subscriptions.repo.ts';
import type { Subscription } from '../subscriptions.repo.ts';
import type { BillingContext } from './context.ts';

export const DEFAULT_PAYMENTS_CONFIG: PaymentsConfig = {
  gateway: 'sandbox',
  sandboxFile: undefined,
  dunningRetryDays: [1, 3, 5, 7],
  dunningJitterMinutes: 60,
  dunningGraceDays: 3,
  dunningFinalAction: 'cancel',
  invoiceLinkTtlSec: 3_600,
  invoiceRunMaxPerSec: 0,
};

/** What follows a failed attempt: the next retry, or (retries exhausted) the final action and when. */
export interface DunningPlan {
  nextAttemptAt: Date | null;
  finalAction: 'cancel' | 'downgrade' | null;
  finalActionAt: Date | null;
}

/**
 * Dunning (issue #14): a failed collection makes the subscription past_due; the invoice is retried on the
 * configured days after its finalization (default 1, 3, 5, 7), each moved by a jitter derived from the
 * invoice and attempt (spread across orgs, yet the same on every recomputation); after the last retry fails
 * and the grace period passes, the final action runs (cancel, or downgrade to the default plan) and the
 * invoice is marked uncollectible. Each step commits with its outbox events; the e-mails come from them.
 *
 * Billing I cancels a past_due subscription `pastDueGraceDays` (14) after it became past due: a backstop
 * the default schedule (last retry day 7 + grace 3) never reaches.
 */
export interface Dunning {
  config: PaymentsConfig;
  planAfterFailure(invoice: Invoice, failedAttempts: number, now: Date): DunningPlan;
  /** Schedules what the plan says (the global index the dunning schedule reads). */
  schedule(trx: ITrx, orgId: string, invoiceId: string, plan: DunningPlan, onTestClock: boolean): Promise<void>;
  markPastDue(trx: ITrx, ctx: TenantActorContext, now: Date, onTestClock: boolean): Promise<void>;
  /** Back to active once nothing finalized is left unpaid. */
  recover(trx: ITrx, ctx: TenantActorContext, onTestClock: boolean): Promise<void>;
  finalAction(trx: ITrx, ctx: TenantActorContext, now: Date, onTestClock: boolean): Promise<'canceled' | 'downgraded' | 'none'>;
}

export function jitterMs(invoiceId: string, attempt: number, maxMinutes: number): number {
  if (maxMinutes <= 0) return 0;
  const h = createHash('sha256').update(`${invoiceId}:${attempt}`).digest().readUInt32BE(0);
  const span = 2 * maxMinutes * 60_000;
  return (h % (span + 1)) - maxMinutes * 60_000;
}

export function createDunning(c: BillingContext, config: PaymentsConfig): Dunning {
  function dueAt(sub: Subscription): Date | null {
    if (sub.status === 'canceled') return null;
    if (sub.status === 'trialing' && sub.trialEnd) return sub.trialEnd;
    if (sub.status === 'past_due' && sub.pastDueSince) {
      const giveUp = addDays(sub.pastDueSince, c.deps.config.pastDueGraceDays);
      return giveUp < sub.currentPeriodEnd ? giveUp : sub.currentPeriodEnd;
    }
    return sub.currentPeriodEnd;
  }

  /** As Billing I's own transitions publish them (the same payload, audit action and schedule). */
  async function emit(trx: ITrx, ctx: TenantActorContext, sub: Subscription, change: string, previousStatus: string, opts: { entitlements: boolean; onTestClock: boolean }) {
    const b = asBilling(trx);
    const [plan, price] = await Promise.all([catalog.findPlan(b, sub.planId), catalog.findPrice(b, sub.priceId)]);
    const payload: SubscriptionEventPayload = {
      subscriptionId: sub.id,
      status: sub.status,
      planId: sub.planId,
      planKey: plan?.key ?? null,
      priceId: sub.priceId,
      interval: price?.interval ?? null,
      quantity: sub.quantity,
      amountMinor: price && price.usageType !== 'metered' ? amountFor(price, sub.quantity) : null,
      currency: sub.currency,
      currencyExponent: currencyExponent(sub.currency) ?? 2,
      change,
      previousStatus,
      currentPeriodEnd: sub.currentPeriodEnd.toISOString(),
      version: sub.version,
    };
    await c.publish(b, ctx, sub.status === 'canceled' ? BILLING_EVENTS.subscriptionCanceled : BILLING_EVENTS.subscriptionUpdated, payload);
    if (change === 'past_due') await c.publish(b, ctx, BILLING_EVENTS.subscriptionPastDue, payload);
    await c.record(b, ctx, `billing.subscription.${change}`, { type: 'billing_subscription', id: sub.id }, { status: { from: previousStatus, to: sub.status }, planId: sub.planId, priceId: sub.priceId, by: 'dunning' });
    if (opts.entitlements) await c.entitlementsChanged(b, ctx);
    await subs.setSchedule(b, ctx.tenantId, dueAt(sub), opts.onTestClock);
  }

  return {
    config,
    planAfterFailure(invoice, failedAttempts, now) {
      const base = invoice.finalizedAt ?? now;
      const days = config.dunningRetryDays;
      if (failedAttempts <= days.length) {
        const at = new Date(addDays(base, days[failedAttempts - 1]!).getTime() + jitterMs(invoice.id, failedAttempts, config.dunningJitterMinutes));
        // A manual attempt late in the schedule: the next retry is never in the past.
        return { nextAttemptAt: at > now ? at : new Date(now.getTime() + 3_600_000), finalAction: null, finalActionAt: null };
      }
      const last = addDays(base, days.at(-1)!);
      const finalAt = addDays(last > now ? last : now, config.dunningGraceDays);
      return { nextAttemptAt: null, finalAction: config.dunningFinalAction, finalActionAt: finalAt };
    },
    async schedule(trx, orgId, invoiceId, plan, onTestClock) {
      await scheduleDunning(trx, orgId, invoiceId, plan.nextAttemptAt ?? plan.finalActionAt, onTestClock);
    },
    async markPastDue(trx, ctx, now, onTestClock) {
      const sub = await subs.findLiveSubscription(asBilling(trx), ctx.tenantId);
      if (!sub || sub.status !== 'active') return;
      const updated = await subs.updateSubscription(asBilling(trx), ctx.tenantId, sub.id, { status: 'past_due', pastDueSince: now });
      await emit(trx, ctx, updated, 'past_due', sub.status, { entitlements: false, onTestClock });
    },
    async recover(trx, ctx, onTestClock) {
      const sub = await subs.findLiveSubscription(asBilling(trx), ctx.tenantId);
      if (!sub || sub.status !== 'past_due') return;
      const unpaid = await trx.selectFrom('billing_invoices').select('id').where('tenant_id', '=', ctx.tenantId).where('status', '=', 'finalized').limit(1).executeTakeFirst();
      if (unpaid) return;
      const updated = await subs.updateSubscription(asBilling(trx), ctx.tenantId, sub.id, { status: 'active', pastDueSince: null });
      await emit(trx, ctx, updated, 'recovered', sub.status, { entitlements: false, onTestClock });
    },
    async finalAction(trx, ctx, now, onTestClock) {
      const b = asBilling(trx);
      const sub = await subs.findLiveSubscription(b, ctx.tenantId);
      if (!sub || (sub.status !== 'past_due' && sub.status !== 'active')) return 'none';
      if (config.dunningFinalAction === 'downgrade') {
        const plan = await catalog.findDefaultPlan(b);
        const price = plan && (await catalog.currentPrice(b, plan.id, sub.currency, sub.interval));
        if (plan && price && price.id !== sub.priceId) {
          const updated = await subs.updateSubscription(b, ctx.tenantId, sub.id, { planId: plan.id, priceId: price.id, status: 'active', pastDueSince: null, pendingPlanId: null, pendingPriceId: null, cancelAtPeriodEnd: false, quantity: 1 });
          await emit(trx, ctx, updated, 'plan_changed', sub.status, { entitlements: true, onTestClock });
          return 'downgraded';
        }
      }
      const updated = await subs.updateSubscription(b, ctx.tenantId, sub.id, { status: 'canceled', canceledAt: now, pendingPlanId: null, pendingPriceId: null });
      await emit(trx, ctx, updated, 'canceled', sub.status, { entitlements: true, onTestClock });
      return 'canceled';
    },
  };
}
