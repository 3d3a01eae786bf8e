import type { Kysely } from 'kysely';
import type { BillingTables, EntitlementSpec, Trx } from './billing.repo.ts';

/** An extra priced item of the catalog (insert-only: a new price is a new add-on). */
export interface Addon {
  id: string;
  key: string;
  name: string;
  currency: string;
  interval: 'month' | 'year';
  /** Per unit of quantity and period, in minor units. */
  amount: number;
  /** Granted per unit: features as they are, limits and quotas multiplied by the quantity. */
  entitlements: EntitlementSpec;
  public: boolean;
  createdAt: Date;
}

export interface SubscriptionAddon {
  id: string;
  subscriptionId: string;
  addonId: string;
  quantity: number;
  addedAt: Date;
  removedAt: Date | null;
  version: number;
}

type Q = Trx | Kysely<BillingTables>;
const json = <T>(v: unknown): T => (typeof v === 'string' ? JSON.parse(v) : v) as T;

function toAddon(r: { id: string; key: string; name: string; currency: string; interval: string; amount: string | number | bigint; entitlements: unknown; public: boolean; created_at: Date }): Addon {
  const e = json<Partial<EntitlementSpec>>(r.entitlements);
  return {
    id: r.id,
    key: r.key,
    name: r.name,
    currency: r.currency,
    interval: r.interval as Addon['interval'],
    amount: Number(r.amount),
    entitlements: { features: e.features ?? [], limits: e.limits ?? {}, quotas: e.quotas ?? {} },
    public: r.public,
    createdAt: r.created_at,
  };
}

export async function insertAddon(q: Q, a: Omit<Addon, 'createdAt'>): Promise<Addon | undefined> {
  const r = await q
    .insertInto('billing_addons')
    .values({ id: a.id, key: a.key, name: a.name, currency: a.currency, interval: a.interval, amount: a.amount, entitlements: JSON.stringify(a.entitlements), public: a.public })
    .onConflict((oc) => oc.column('key').doNothing())
    .returningAll()
    .executeTakeFirst();
  return r ? toAddon(r) : undefined;
}

export async function listAddons(q: Q, opts: { publicOnly: boolean }): Promise<Addon[]> {
  let s = q.selectFrom('billing_addons').selectAll().orderBy('key');
  if (opts.publicOnly) s = s.where('public', '=', true);
  return (await s.execute()).map(toAddon);
}

export async function findAddons(q: Q, ids: string[]): Promise<Addon[]> {
  if (ids.length === 0) return [];
  return (await q.selectFrom('billing_addons').selectAll().where('id', 'in', ids).execute()).map(toAddon);
}

function toSubAddon(r: { id: string; subscription_id: string; addon_id: string; quantity: number; added_at: Date; removed_at: Date | null; version: number }): SubscriptionAddon {
  return { id: r.id, subscriptionId: r.subscription_id, addonId: r.addon_id, quantity: r.quantity, addedAt: r.added_at, removedAt: r.removed_at, version: r.version };
}

/** The add-ons live on a subscription (not removed). */
export async function liveAddons(trx: Trx, tenantId: string, subscriptionId: string): Promise<SubscriptionAddon[]> {
  const rows = await trx
    .selectFrom('billing_subscription_addons')
    .selectAll()
    .where('tenant_id', '=', tenantId)
    .where('subscription_id', '=', subscriptionId)
    .where('removed_at', 'is', null)
    .orderBy('added_at')
    .execute();
  return rows.map(toSubAddon);
}

export async function insertSubscriptionAddon(trx: Trx, tenantId: string, a: Pick<SubscriptionAddon, 'id' | 'subscriptionId' | 'addonId' | 'quantity' | 'addedAt'>): Promise<SubscriptionAddon> {
  const r = await trx
    .insertInto('billing_subscription_addons')
    .values({ tenant_id: tenantId, id: a.id, subscription_id: a.subscriptionId, addon_id: a.addonId, quantity: a.quantity, added_at: a.addedAt })
    .returningAll()
    .executeTakeFirstOrThrow();
  return toSubAddon(r);
}

export async function updateSubscriptionAddon(trx: Trx, tenantId: string, id: string, c: { quantity?: number; removedAt?: Date }): Promise<SubscriptionAddon> {
  const r = await trx
    .updateTable('billing_subscription_addons')
    .set((eb) => ({
      ...(c.quantity !== undefined ? { quantity: c.quantity } : {}),
      ...(c.removedAt ? { removed_at: c.removedAt } : {}),
      version: eb('version', '+', 1),
      updated_at: new Date(),
    }))
    .where('tenant_id', '=', tenantId)
    .where('id', '=', id)
    .returningAll()
    .executeTakeFirstOrThrow();
  return toSubAddon(r);
}
