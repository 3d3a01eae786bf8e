import type { ActorContext, TenantActorContext } from '../../../platform/http/actor.ts';
import { newId } from '../../../platform/ids.ts';
import { addDays, periodAt, periodBoundary } from '../billing.calendar.ts';
import { alreadySubscribed, invalidTransition, noCustomer, noSubscription, planNotFound, priceNotFound, samePlan } from '../billing.errors.ts';
import { BILLING_EVENTS, type SubscriptionEventPayload } from '../billing.events.ts';
import { formatMoney, prorate } from '../billing.money.ts';
import { amountFor } from '../billing.pricing.ts';
import { currencyExponent } from '../billing.money.ts';
import * as catalog from '../billing.repo.ts';
import type { Plan, Price, Trx } from '../billing.repo.ts';
import * as repo from '../subscriptions.repo.ts';
import { enqueueInvoice } from '../invoice-run.repo.ts';
import type { Charge, Customer, CustomerChanges, Subscription, SubscriptionChanges } from '../subscriptions.repo.ts';
import { addonPeriodCharges } from './add-ons.ts';
import { remindTrialEnding, trialReminderAt } from './billing-mail.ts';
import { tenantCtx, type BillingContext } from './context.ts';

export interface SubscribeInput {
  planId: string;
  interval?: 'month' | 'year';
  /** Default: the customer's currency. */
  currency?: string;
  /** Start with the price's trial (default true); false starts paid at once. */
  trial?: boolean;
  /** Licensed, not per-seat prices: how many units. Per-seat prices follow the member count. */
  quantity?: number;
}

export interface ChangePreview {
  direction: 'upgrade' | 'downgrade';
  timing: 'now' | 'period_end';
  effectiveAt: Date;
  currency: string;
  lines: Array<{ kind: Charge['kind']; amount: number; description: string; periodStart: Date; periodEnd: Date }>;
  /** Sum of the lines: positive is owed now, negative is a credit. */
  total: number;
  fromPriceId: string;
  toPriceId: string;
}

export interface SubscriptionUseCases {
  getCustomer(orgId: string): Promise<Customer>;
  updateCustomer(ctx: TenantActorContext, changes: CustomerChanges): Promise<Customer>;
  getSubscription(orgId: string): Promise<Subscription>;
  subscribe(ctx: TenantActorContext, input: SubscribeInput): Promise<Subscription>;
  previewChange(orgId: string, input: { planId: string; interval?: 'month' | 'year' }): Promise<ChangePreview>;
  changePlan(ctx: TenantActorContext, input: { planId: string; interval?: 'month' | 'year' }): Promise<{ subscription: Subscription; preview: ChangePreview }>;
  cancel(ctx: TenantActorContext, input: { atPeriodEnd: boolean }): Promise<Subscription>;
  /** Takes back a cancellation scheduled for the period end. */
  uncancel(ctx: TenantActorContext): Promise<Subscription>;
  pause(ctx: TenantActorContext): Promise<Subscription>;
  resume(ctx: TenantActorContext): Promise<Subscription>;
  /** Payments (issue #14): a failed collection makes the subscription past_due; a later success recovers it. */
  markPastDue(ctx: TenantActorContext): Promise<Subscription>;
  markPaid(ctx: TenantActorContext): Promise<Subscription>;
  /** Seat-based subscriptions: re-reads the member count and prorates the difference now. */
  syncSeats(ctx: TenantActorContext): Promise<Subscription | null>;
  listCharges(orgId: string, limit: number, after?: string): Promise<Charge[]>;
  /**
   * Applies every transition that is due by the org's clock (trial end, renewals, scheduled changes, dunning).
   * `first` runs in the same transaction under the customer lock before the clock is read (the test clock
   * moves there, so a moved clock and the transitions it makes due commit together or not at all).
   */
  advance(ctx: TenantActorContext, first?: (trx: Trx) => Promise<void>): Promise<Subscription | null>;
  /** Runs `advance` for orgs due by the wall clock (the renewal schedule). */
  advanceDue(ctx: ActorContext, limit: number): Promise<number>;
}

const LIVE_FOR_CHANGES = new Set(['trialing', 'active', 'past_due']);

export function subscriptionUseCases(c: BillingContext): SubscriptionUseCases {
  const { scope } = c;

  async function loadPlanPrice(trx: Trx, planId: string, currency: string, interval: 'month' | 'year'): Promise<{ plan: Plan; price: Price }> {
    const plan = await catalog.findPlan(trx, planId);
    if (!plan) throw planNotFound();
    const price = await catalog.currentPrice(trx, planId, currency, interval);
    if (!price) throw priceNotFound(`The plan has no ${interval}ly price in ${currency}`);
    return { plan, price };
  }

  /** Seat-based prices follow the member count, read before the transaction (tenancy's own query). */
  function quantityFor(seats: number, price: Price, requested?: number): number {
    return price.perSeat ? Math.max(1, seats) : (requested ?? 1);
  }

  /** The charge in advance for one period (metered prices are charged in arrears, by the invoice). */
  function periodCharge(sub: Pick<Subscription, 'id' | 'currency'>, price: Price, quantity: number, start: Date, end: Date): Omit<Charge, 'createdAt' | 'invoiceId'>[] {
    if (price.usageType === 'metered') return [];
    const amount = amountFor(price, quantity);
    return [{ id: newId(), subscriptionId: sub.id, kind: 'subscription', amount, currency: sub.currency, quantity, priceId: price.id, description: `Subscription ${start.toISOString().slice(0, 10)} – ${end.toISOString().slice(0, 10)} (${formatMoney({ amount, currency: sub.currency })})`, periodStart: start, periodEnd: end }];
  }

  function dueAt(sub: Subscription, now?: Date): Date | null {
    if (sub.status === 'canceled') return null;
    // The trial-ending e-mail is due first (without `now`, a reminder already sent costs one no-op advance).
    const remind = trialReminderAt(sub, c.deps.config.trialReminderDays ?? 3);
    if (remind && (!now || now < remind)) return remind;
    if (sub.status === 'trialing' && sub.trialEnd) return sub.trialEnd;
    if (sub.status === 'past_due' && sub.pastDueSince) {
      const giveUp = addDays(sub.pastDueSince, c.deps.config.pastDueGraceDays);
      return giveUp < sub.currentPeriodEnd ? giveUp : sub.currentPeriodEnd;
    }
    return sub.currentPeriodEnd;
  }

  async function emit(trx: Trx, ctx: TenantActorContext, sub: Subscription, change: string, previousStatus: string | null, opts: { entitlements?: boolean; onTestClock: boolean }) {
    // What a subscriber outside billing needs without calling back (the CRM's deal: plan, amount, currency).
    const [plan, price] = await Promise.all([catalog.findPlan(trx, sub.planId), catalog.findPrice(trx, sub.priceId)]);
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
    const name = change === 'created' ? BILLING_EVENTS.subscriptionCreated : sub.status === 'canceled' ? BILLING_EVENTS.subscriptionCanceled : BILLING_EVENTS.subscriptionUpdated;
    await c.publish(trx, ctx, name, payload);
    await c.record(trx, ctx, `billing.subscription.${change}`, { type: 'billing_subscription', id: sub.id }, { status: previousStatus === sub.status ? sub.status : { from: previousStatus, to: sub.status }, planId: sub.planId, priceId: sub.priceId });
    if (opts.entitlements) await c.entitlementsChanged(trx, ctx);
    await repo.setSchedule(trx, ctx.tenantId, dueAt(sub), opts.onTestClock);
  }

  /** Runs fn on the org's live subscription under the customer lock, with the org's clock. */
  async function mutate<T>(ctx: TenantActorContext, fn: (trx: Trx, sub: Subscription, now: Date, onTestClock: boolean, seats: number) => Promise<T>): Promise<T> {
    const seats = await c.deps.seats(ctx.tenantId);
    return scope.withTenant(ctx.tenantId, async (trx) => {
      await repo.lockCustomer(trx, ctx.tenantId);
      const { now, onTestClock } = await c.clockNow(trx, ctx.tenantId);
      // Anything due first (a renewal that should have happened) happens before the requested change.
      const advanced = await advanceIn(trx, ctx, now, onTestClock, seats);
      const sub = advanced ?? (await repo.findLiveSubscription(trx, ctx.tenantId));
      if (!sub || sub.status === 'canceled') throw noSubscription();
      return fn(trx, sub, now, onTestClock, seats);
    });
  }

  /** Applies due transitions up to `now`, in the caller's transaction (customer already locked). */
  async function advanceIn(trx: Trx, ctx: TenantActorContext, now: Date, onTestClock: boolean, seats: number): Promise<Subscription | null> {
    let sub = await repo.findLiveSubscription(trx, ctx.tenantId);
    if (!sub) {
      await repo.setSchedule(trx, ctx.tenantId, null, onTestClock);
      return null;
    }
    await remindTrialEnding(c, trx, ctx, sub, now);
    // Bounded: a clock moved years ahead renews period by period, at most this many in one go.
    for (let step = 0; step < 240; step++) {
      const due = dueAt(sub, now);
      if (!due || due > now) break;
      const before = sub.status;
      if (sub.status === 'trialing') {
        const end = sub.trialEnd ?? sub.currentPeriodEnd;
        if (sub.cancelAtPeriodEnd) {
          sub = await repo.updateSubscription(trx, ctx.tenantId, sub.id, { status: 'canceled', canceledAt: end });
          await emit(trx, ctx, sub, 'canceled', before, { entitlements: true, onTestClock });
          break;
        }
        const price = (await catalog.findPrice(trx, sub.priceId))!;
        const quantity = quantityFor(seats, price, sub.quantity);
        const periodEnd = periodBoundary(end, sub.interval, 1);
        sub = await repo.updateSubscription(trx, ctx.tenantId, sub.id, { status: 'active', anchorAt: end, currentPeriodStart: end, currentPeriodEnd: periodEnd, quantity });
        await repo.insertCharges(trx, ctx.tenantId, periodCharge(sub, price, quantity, end, periodEnd));
        await addonPeriodCharges(trx, ctx.tenantId, sub, end, periodEnd);
        await emit(trx, ctx, sub, 'activated', before, { onTestClock });
        continue;
      }
      if (sub.status === 'past_due' && sub.pastDueSince && addDays(sub.pastDueSince, c.deps.config.pastDueGraceDays) <= now && due < sub.currentPeriodEnd) {
        sub = await repo.updateSubscription(trx, ctx.tenantId, sub.id, { status: 'canceled', canceledAt: due });
        await emit(trx, ctx, sub, 'canceled', before, { entitlements: true, onTestClock });
        break;
      }
      // Renewal at the period end.
      const end = sub.currentPeriodEnd;
      if (sub.cancelAtPeriodEnd) {
        sub = await repo.updateSubscription(trx, ctx.tenantId, sub.id, { status: 'canceled', canceledAt: end });
        await emit(trx, ctx, sub, 'canceled', before, { entitlements: true, onTestClock });
        break;
      }
      const changing = sub.pendingPriceId !== null;
      const priceId = sub.pendingPriceId ?? sub.priceId;
      const price = (await catalog.findPrice(trx, priceId))!;
      const quantity = quantityFor(seats, price, sub.quantity);
      // A scheduled change to another interval starts a new cycle, anchored at this renewal.
      const recycle = price.interval !== sub.interval;
      const anchorAt = recycle ? end : sub.anchorAt;
      const period = periodAt(anchorAt, price.interval, end);
      sub = await repo.updateSubscription(trx, ctx.tenantId, sub.id, {
        planId: sub.pendingPlanId ?? sub.planId,
        priceId,
        pendingPlanId: null,
        pendingPriceId: null,
        ...(recycle ? { interval: price.interval, anchorAt } : {}),
        quantity,
        currentPeriodStart: period.start,
        currentPeriodEnd: period.end,
      });
      if (sub.status !== 'paused') await repo.insertCharges(trx, ctx.tenantId, periodCharge(sub, price, quantity, period.start, period.end));
      if (sub.status !== 'paused') await addonPeriodCharges(trx, ctx.tenantId, sub, period.start, period.end);
      await emit(trx, ctx, sub, changing ? 'plan_changed' : 'renewed', before, { entitlements: changing, onTestClock });
      // The period's invoice is made by the batched invoice run (billing.invoice_run), queued with the renewal;
      // an org on a test clock is invoiced by the renewal event's handler at once, as the clock moves.
      if (!changing && !onTestClock) await enqueueInvoice(trx, ctx.tenantId, sub.id, sub.currentPeriodEnd);
    }
    await repo.setSchedule(trx, ctx.tenantId, dueAt(sub, now), onTestClock);
    return sub;
  }

  async function preview(trx: Trx, seats: number, sub: Subscription, now: Date, input: { planId: string; interval?: 'month' | 'year' }): Promise<{ preview: ChangePreview; plan: Plan; price: Price; quantity: number }> {
    if (!LIVE_FOR_CHANGES.has(sub.status)) throw invalidTransition(sub.status, 'changed');
    const interval = input.interval ?? sub.interval;
    const { plan, price } = await loadPlanPrice(trx, input.planId, sub.currency, interval);
    if (price.id === sub.priceId && !sub.pendingPriceId) throw samePlan();
    const oldPlan = (await catalog.findPlan(trx, sub.planId))!;
    const oldPrice = (await catalog.findPrice(trx, sub.priceId))!;
    const quantity = price.perSeat ? quantityFor(seats, price) : oldPrice.perSeat ? 1 : sub.quantity;
    const oldAmount = oldPrice.usageType === 'metered' ? 0 : amountFor(oldPrice, sub.quantity);
    const newAmount = price.usageType === 'metered' ? 0 : amountFor(price, quantity);
    const direction = plan.rank > oldPlan.rank || (plan.rank === oldPlan.rank && newAmount >= oldAmount) ? 'upgrade' : 'downgrade';
    // The target plan says when moving to it takes effect; a trial changes at once and owes nothing.
    const timing = sub.status === 'trialing' || price.id === sub.priceId ? 'now' : direction === 'upgrade' ? plan.upgradeTiming : plan.downgradeTiming;
    const lines: ChangePreview['lines'] = [];
    if (timing === 'now' && sub.status !== 'trialing' && price.id !== sub.priceId) {
      const sameCycle = interval === sub.interval;
      const credit = prorate(oldAmount, 0, sub.currentPeriodStart, sub.currentPeriodEnd, now);
      const charge = sameCycle ? prorate(0, newAmount, sub.currentPeriodStart, sub.currentPeriodEnd, now) : newAmount > 0 ? [{ kind: 'proration_charge' as const, amount: newAmount, periodStart: now, periodEnd: periodBoundary(now, interval, 1) }] : [];
      for (const l of credit) lines.push({ ...l, description: `Unused time on ${oldPlan.name}` });
      for (const l of charge) lines.push({ ...l, description: `Remaining time on ${plan.name}` });
    }
    const effectiveAt = timing === 'now' ? now : sub.currentPeriodEnd;
    return {
      preview: { direction, timing, effectiveAt, currency: sub.currency, lines, total: lines.reduce((a, l) => a + l.amount, 0), fromPriceId: sub.priceId, toPriceId: price.id },
      plan,
      price,
      quantity,
    };
  }

  async function simpleTransition(ctx: TenantActorContext, allowed: string[], action: string, changes: (sub: Subscription, now: Date) => SubscriptionChanges, change: string, entitlements: boolean) {
    return mutate(ctx, async (trx, sub, now, onTestClock) => {
      if (!allowed.includes(sub.status)) throw invalidTransition(sub.status, action);
      const before = sub.status;
      const updated = await repo.updateSubscription(trx, ctx.tenantId, sub.id, changes(sub, now));
      await emit(trx, ctx, updated, change, before, { entitlements, onTestClock });
      return updated;
    });
  }

  async function advance(ctx: TenantActorContext, first?: (trx: Trx) => Promise<void>): Promise<Subscription | null> {
    const seats = await c.deps.seats(ctx.tenantId);
    return scope.withTenant(ctx.tenantId, async (trx) => {
      await repo.lockCustomer(trx, ctx.tenantId);
      if (first) await first(trx);
      const { now, onTestClock } = await c.clockNow(trx, ctx.tenantId);
      return advanceIn(trx, ctx, now, onTestClock, seats);
    });
  }

  return {
    async getCustomer(orgId) {
      const customer = await scope.withTenant(orgId, (trx) => repo.findCustomer(trx, orgId));
      if (!customer) throw noCustomer();
      return customer;
    },
    async updateCustomer(ctx, changes) {
      return scope.withTenant(ctx.tenantId, async (trx) => {
        await repo.lockCustomer(trx, ctx.tenantId);
        const customer = await repo.updateCustomer(trx, ctx.tenantId, changes);
        await c.record(trx, ctx, 'billing.customer.update', { type: 'billing_customer', id: customer.id }, { fields: Object.keys(changes) });
        return customer;
      });
    },
    async getSubscription(orgId) {
      const sub = await scope.withTenant(orgId, (trx) => repo.findLatestSubscription(trx, orgId));
      if (!sub) throw noSubscription();
      return sub;
    },

    async subscribe(ctx, input) {
      const seats = await c.deps.seats(ctx.tenantId);
      return scope.withTenant(ctx.tenantId, async (trx) => {
        const customer = await repo.lockCustomer(trx, ctx.tenantId, input.currency);
        const { now, onTestClock } = await c.clockNow(trx, ctx.tenantId);
        await advanceIn(trx, ctx, now, onTestClock, seats);
        if (await repo.findLiveSubscription(trx, ctx.tenantId)) throw alreadySubscribed();
        const { plan, price } = await loadPlanPrice(trx, input.planId, input.currency ?? customer.currency, input.interval ?? 'month');
        const quantity = quantityFor(seats, price, input.quantity);
        const trialDays = input.trial === false ? 0 : price.trialDays;
        const trialEnd = trialDays > 0 ? addDays(now, trialDays) : null;
        const periodEnd = trialEnd ?? periodBoundary(now, price.interval, 1);
        const sub = await repo.insertSubscription(trx, ctx.tenantId, {
          id: newId(),
          planId: plan.id,
          priceId: price.id,
          status: trialEnd ? 'trialing' : 'active',
          quantity,
          currency: price.currency,
          interval: price.interval,
          anchorAt: now,
          currentPeriodStart: now,
          currentPeriodEnd: periodEnd,
          trialEnd,
          cancelAtPeriodEnd: false,
          canceledAt: null,
          pausedAt: null,
          pastDueSince: null,
          pendingPlanId: null,
          pendingPriceId: null,
        });
        if (!trialEnd) await repo.insertCharges(trx, ctx.tenantId, periodCharge(sub, price, quantity, now, periodEnd));
        await emit(trx, ctx, sub, 'created', null, { entitlements: true, onTestClock });
        return sub;
      });
    },

    async previewChange(orgId, input) {
      const seats = await c.deps.seats(orgId);
      return scope.withTenant(orgId, async (trx) => {
        const sub = await repo.findLiveSubscription(trx, orgId);
        if (!sub) throw noSubscription();
        const { now } = await c.clockNow(trx, orgId);
        return (await preview(trx, seats, sub, now, input)).preview;
      });
    },

    async changePlan(ctx, input) {
      return mutate(ctx, async (trx, sub, now, onTestClock, seats) => {
        const p = await preview(trx, seats, sub, now, input);
        const before = sub.status;
        if (p.price.id === sub.priceId) {
          // Back to the current price: the scheduled change is dropped.
          const updated = await repo.updateSubscription(trx, ctx.tenantId, sub.id, { pendingPlanId: null, pendingPriceId: null });
          await emit(trx, ctx, updated, 'change_unscheduled', before, { onTestClock });
          return { subscription: updated, preview: p.preview };
        }
        if (p.preview.timing === 'period_end') {
          const updated = await repo.updateSubscription(trx, ctx.tenantId, sub.id, { pendingPlanId: p.plan.id, pendingPriceId: p.price.id });
          await emit(trx, ctx, updated, 'change_scheduled', before, { onTestClock });
          return { subscription: updated, preview: p.preview };
        }
        const newCycle = p.price.interval !== sub.interval && sub.status !== 'trialing';
        const updated = await repo.updateSubscription(trx, ctx.tenantId, sub.id, {
          planId: p.plan.id,
          priceId: p.price.id,
          quantity: p.quantity,
          pendingPlanId: null,
          pendingPriceId: null,
          interval: p.price.interval,
          ...(newCycle ? { anchorAt: now, currentPeriodStart: now, currentPeriodEnd: periodBoundary(now, p.price.interval, 1) } : {}),
        });
        await repo.insertCharges(
          trx,
          ctx.tenantId,
          p.preview.lines.map((l) => ({ id: newId(), subscriptionId: sub.id, kind: l.kind, amount: l.amount, currency: sub.currency, quantity: p.quantity, priceId: l.kind === 'proration_credit' ? sub.priceId : p.price.id, description: l.description, periodStart: l.periodStart, periodEnd: l.periodEnd })),
        );
        await emit(trx, ctx, updated, 'plan_changed', before, { entitlements: true, onTestClock });
        return { subscription: updated, preview: p.preview };
      });
    },

    async cancel(ctx, input) {
      return mutate(ctx, async (trx, sub, now, onTestClock) => {
        const before = sub.status;
        if (input.atPeriodEnd) {
          if (sub.status === 'paused') throw invalidTransition(sub.status, 'canceled at period end');
          const updated = await repo.updateSubscription(trx, ctx.tenantId, sub.id, { cancelAtPeriodEnd: true });
          await emit(trx, ctx, updated, 'cancel_scheduled', before, { onTestClock });
          return updated;
        }
        const updated = await repo.updateSubscription(trx, ctx.tenantId, sub.id, { status: 'canceled', canceledAt: now, pendingPlanId: null, pendingPriceId: null });
        if (before === 'active' || before === 'past_due') {
          const price = (await catalog.findPrice(trx, sub.priceId))!;
          const paid = price.usageType === 'metered' ? 0 : amountFor(price, sub.quantity);
          const credit = prorate(paid, 0, sub.currentPeriodStart, sub.currentPeriodEnd, now);
          await repo.insertCharges(trx, ctx.tenantId, credit.map((l) => ({ ...l, id: newId(), subscriptionId: sub.id, currency: sub.currency, quantity: sub.quantity, priceId: sub.priceId, description: 'Unused time after cancellation' })));
        }
        await emit(trx, ctx, updated, 'canceled', before, { entitlements: true, onTestClock });
        return updated;
      });
    },

    uncancel: (ctx) =>
      mutate(ctx, async (trx, sub, _now, onTestClock) => {
        if (!sub.cancelAtPeriodEnd) throw invalidTransition(sub.status, 'uncanceled (no cancellation is scheduled)');
        const updated = await repo.updateSubscription(trx, ctx.tenantId, sub.id, { cancelAtPeriodEnd: false });
        await emit(trx, ctx, updated, 'cancel_unscheduled', sub.status, { onTestClock });
        return updated;
      }),
    pause: (ctx) => simpleTransition(ctx, ['active', 'past_due'], 'paused', (_s, now) => ({ status: 'paused', pausedAt: now }), 'paused', true),
    resume: (ctx) => simpleTransition(ctx, ['paused'], 'resumed', () => ({ status: 'active', pausedAt: null }), 'resumed', true),
    markPastDue: (ctx) => simpleTransition(ctx, ['active'], 'marked past due', (_s, now) => ({ status: 'past_due', pastDueSince: now }), 'past_due', false),
    markPaid: (ctx) => simpleTransition(ctx, ['past_due'], 'marked paid', () => ({ status: 'active', pastDueSince: null }), 'recovered', false),

    async syncSeats(ctx) {
      const seats = await c.deps.seats(ctx.tenantId);
      return scope.withTenant(ctx.tenantId, async (trx) => {
        await repo.lockCustomer(trx, ctx.tenantId);
        const { now, onTestClock } = await c.clockNow(trx, ctx.tenantId);
        const sub = await advanceIn(trx, ctx, now, onTestClock, seats);
        if (!sub || sub.status === 'canceled') return null;
        const price = (await catalog.findPrice(trx, sub.priceId))!;
        if (!price.perSeat) return sub;
        const quantity = quantityFor(seats, price);
        if (quantity === sub.quantity) return sub;
        const updated = await repo.updateSubscription(trx, ctx.tenantId, sub.id, { quantity });
        if (sub.status === 'active' || sub.status === 'past_due') {
          const lines = prorate(amountFor(price, sub.quantity), amountFor(price, quantity), sub.currentPeriodStart, sub.currentPeriodEnd, now);
          await repo.insertCharges(trx, ctx.tenantId, lines.map((l) => ({ ...l, id: newId(), subscriptionId: sub.id, currency: sub.currency, quantity, priceId: price.id, description: `Seats ${sub.quantity} → ${quantity}` })));
        }
        await emit(trx, ctx, updated, 'quantity_changed', sub.status, { entitlements: true, onTestClock });
        return updated;
      });
    },

    async listCharges(orgId, limit, after) {
      return scope.withTenant(orgId, (trx) => repo.listCharges(trx, orgId, undefined, limit, after));
    },

    advance,

    async advanceDue(ctx, limit) {
      const due = await repo.dueTenants(scope.app, new Date(), limit);
      for (const orgId of due) await advance(tenantCtx(ctx, orgId));
      return due.length;
    },
  };
}
