import { AppError } from '../../../platform/http/errors.ts';
import type { ActorContext, TenantActorContext } from '../../../platform/http/actor.ts';
import { newId } from '../../../platform/ids.ts';
import { PLATFORM_AUDIT_TENANT } from '../../audit/index.ts';
import * as addonsRepo from '../addons.repo.ts';
import type { Addon, SubscriptionAddon } from '../addons.repo.ts';
import { currencyMismatch, invalidPrice, invalidTransition, keyTaken, noSubscription, unknownCurrency } from '../billing.errors.ts';
import { BILLING_EVENTS, type AddonChangedPayload } from '../billing.events.ts';
import { currencyExponent, formatMoney, prorate } from '../billing.money.ts';
import type { EntitlementSpec, Trx } from '../billing.repo.ts';
import * as repo from '../subscriptions.repo.ts';
import type { Charge, Subscription } from '../subscriptions.repo.ts';
import { tenantCtx, type BillingContext } from './context.ts';

/**
 * Add-ons: extra priced items on a subscription (extra seats pack, more API requests, a feature), each
 * with a quantity. Adding, changing or removing one mid-period is prorated exactly with the money helpers
 * (`prorate`: credit of the unused old amount, charge of the remaining new amount; nothing in a trial);
 * renewals charge live add-ons for the new period. What an add-on grants is merged into the org's
 * entitlement snapshot (features added, limits and quotas added per unit), so every change bumps the
 * entitlements version and publishes `billing.entitlements_changed` with `billing.addon_changed`.
 */
export interface AddonUseCases {
  createAddon(ctx: ActorContext, input: Omit<Addon, 'id' | 'createdAt' | 'entitlements' | 'public'> & { public?: boolean; entitlements?: Partial<EntitlementSpec> }): Promise<Addon>;
  listAddons(opts: { publicOnly: boolean }): Promise<Addon[]>;
  subscriptionAddons(orgId: string): Promise<Array<SubscriptionAddon & { addon: Addon }>>;
  /** Sets the add-on's quantity on the live subscription: 0 removes it. Returns the charges it caused. */
  setAddon(ctx: TenantActorContext, addonId: string, quantity: number): Promise<{ addon: SubscriptionAddon | null; charges: Charge[] }>;
}

const addonNotFound = () => new AppError('BILLING.ADDON_NOT_FOUND', 404, 'Add-on not found');
const LIVE = new Set(['trialing', 'active', 'past_due']);

/** Adds the add-ons' grants to a plan's: features united, limits and quotas increased (unlimited stays unlimited). */
export function mergeAddons(base: EntitlementSpec, items: Array<{ addon: Addon; quantity: number }>): EntitlementSpec {
  const out: EntitlementSpec = { ...base, features: [...base.features], limits: { ...base.limits }, quotas: { ...base.quotas } };
  for (const { addon, quantity } of items) {
    for (const f of addon.entitlements.features) if (!out.features.includes(f)) out.features.push(f);
    for (const [k, v] of Object.entries(addon.entitlements.limits)) if (out.limits[k] !== undefined) out.limits[k] += v * quantity;
    for (const [k, v] of Object.entries(addon.entitlements.quotas)) if (out.quotas[k] !== undefined) out.quotas[k] += v * quantity;
  }
  return out;
}

/** In the entitlements load: the live add-ons of a granting subscription, merged. */
export async function withAddons(trx: Trx, tenantId: string, sub: Subscription, base: EntitlementSpec): Promise<EntitlementSpec> {
  const live = await addonsRepo.liveAddons(trx, tenantId, sub.id);
  if (live.length === 0) return base;
  const defs = new Map((await addonsRepo.findAddons(trx, live.map((a) => a.addonId))).map((a) => [a.id, a]));
  return mergeAddons(base, live.flatMap((a) => (defs.has(a.addonId) ? [{ addon: defs.get(a.addonId)!, quantity: a.quantity }] : [])));
}

/** In a renewal: the period charges of the live add-ons (none while paused: the caller decides). */
export async function addonPeriodCharges(trx: Trx, tenantId: string, sub: Subscription, start: Date, end: Date): Promise<void> {
  const live = await addonsRepo.liveAddons(trx, tenantId, sub.id);
  if (live.length === 0) return;
  const defs = new Map((await addonsRepo.findAddons(trx, live.map((a) => a.addonId))).map((a) => [a.id, a]));
  const charges: Omit<Charge, 'createdAt' | 'invoiceId'>[] = [];
  for (const a of live) {
    const def = defs.get(a.addonId);
    if (!def || def.amount === 0) continue;
    const amount = def.amount * a.quantity;
    charges.push({ id: newId(), subscriptionId: sub.id, kind: 'subscription', amount, currency: sub.currency, quantity: a.quantity, priceId: def.id, description: `Add-on ${def.name} × ${a.quantity} ${start.toISOString().slice(0, 10)} – ${end.toISOString().slice(0, 10)} (${formatMoney({ amount, currency: sub.currency })})`, periodStart: start, periodEnd: end });
  }
  await repo.insertCharges(trx, tenantId, charges);
}

export function addonUseCases(c: BillingContext): AddonUseCases {
  const { scope } = c;
  return {
    async createAddon(ctx, input) {
      if (currencyExponent(input.currency) === undefined) throw unknownCurrency(input.currency);
      if (!Number.isSafeInteger(input.amount) || input.amount < 0) throw invalidPrice('amount is a non-negative integer in minor units');
      return scope.withTenant(PLATFORM_AUDIT_TENANT, async (trx) => {
        const addon = await addonsRepo.insertAddon(trx, {
          id: newId(),
          key: input.key,
          name: input.name,
          currency: input.currency,
          interval: input.interval,
          amount: input.amount,
          public: input.public ?? true,
          entitlements: { features: input.entitlements?.features ?? [], limits: input.entitlements?.limits ?? {}, quotas: input.entitlements?.quotas ?? {} },
        });
        if (!addon) throw keyTaken('add-on', input.key);
        await c.record(trx, tenantCtx(ctx, PLATFORM_AUDIT_TENANT), 'billing.addon.created', { type: 'billing_addon', id: addon.id }, { key: addon.key, amount: addon.amount, currency: addon.currency });
        return addon;
      });
    },

    listAddons: (opts) => scope.withTenantRead(PLATFORM_AUDIT_TENANT, (trx) => addonsRepo.listAddons(trx, opts)),

    async subscriptionAddons(orgId) {
      return scope.withTenantRead(orgId, async (trx) => {
        const sub = await repo.findLiveSubscription(trx, orgId);
        if (!sub) return [];
        const live = await addonsRepo.liveAddons(trx, orgId, sub.id);
        const defs = new Map((await addonsRepo.findAddons(trx, live.map((a) => a.addonId))).map((a) => [a.id, a]));
        return live.filter((a) => defs.has(a.addonId)).map((a) => ({ ...a, addon: defs.get(a.addonId)! }));
      });
    },

    async setAddon(ctx, addonId, quantity) {
      return scope.withTenant(ctx.tenantId, async (trx) => {
        await repo.lockCustomer(trx, ctx.tenantId);
        const { now } = await c.clockNow(trx, ctx.tenantId);
        const [def] = await addonsRepo.findAddons(trx, [addonId]);
        if (!def) throw addonNotFound();
        const sub = await repo.findLiveSubscription(trx, ctx.tenantId);
        if (!sub || sub.status === 'canceled') throw noSubscription();
        if (!LIVE.has(sub.status)) throw invalidTransition(sub.status, 'given add-ons');
        if (def.currency !== sub.currency) throw currencyMismatch(sub.currency, def.currency);
        if (def.interval !== sub.interval) throw invalidPrice(`the add-on is billed per ${def.interval}; the subscription per ${sub.interval}`);
        const current = (await addonsRepo.liveAddons(trx, ctx.tenantId, sub.id)).find((a) => a.addonId === addonId) ?? null;
        const before = current?.quantity ?? 0;
        if (before === quantity) return { addon: current, charges: [] };
        let addon: SubscriptionAddon | null;
        if (!current) addon = await addonsRepo.insertSubscriptionAddon(trx, ctx.tenantId, { id: newId(), subscriptionId: sub.id, addonId, quantity, addedAt: now });
        else if (quantity === 0) {
          await addonsRepo.updateSubscriptionAddon(trx, ctx.tenantId, current.id, { removedAt: now });
          addon = null;
        } else addon = await addonsRepo.updateSubscriptionAddon(trx, ctx.tenantId, current.id, { quantity });
        // Exact proration of the rest of the period: the unused share of the old quantity back, the new one charged.
        const lines = sub.status === 'trialing' ? [] : prorate(def.amount * before, def.amount * quantity, sub.currentPeriodStart, sub.currentPeriodEnd, now);
        const charges = lines.map((l) => ({
          id: newId(),
          subscriptionId: sub.id,
          kind: l.kind,
          amount: l.amount,
          currency: sub.currency,
          quantity,
          priceId: def.id,
          description: `Add-on ${def.name}: ${before} → ${quantity} (${formatMoney({ amount: l.amount, currency: sub.currency })})`,
          periodStart: l.periodStart,
          periodEnd: l.periodEnd,
        }));
        await repo.insertCharges(trx, ctx.tenantId, charges);
        const change = before === 0 ? 'added' : quantity === 0 ? 'removed' : 'quantity_changed';
        const payload: AddonChangedPayload = { subscriptionId: sub.id, addonId, addonKey: def.key, change, quantity, previousQuantity: before };
        await c.publish(trx, ctx, BILLING_EVENTS.addonChanged, payload);
        await c.record(trx, ctx, `billing.addon.${change}`, { type: 'billing_subscription', id: sub.id }, { addon: def.key, quantity: { from: before, to: quantity } });
        await c.entitlementsChanged(trx, ctx);
        return { addon, charges: charges.map((ch) => ({ ...ch, createdAt: now, invoiceId: null })) };
      });
    },
  };
}
