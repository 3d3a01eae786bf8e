import type { TenantCache } from '../../../platform/cache/cache.ts';
import { limitExceeded } from '../billing.errors.ts';
import * as catalog from '../billing.repo.ts';
import type { EntitlementSpec, Trx } from '../billing.repo.ts';
import * as repo from '../subscriptions.repo.ts';
import { withAddons } from './add-ons.ts';
import type { BillingContext } from './context.ts';

/** What an org may do now: from its live subscription's price version, else the default plan's. */
export interface EntitlementSnapshot extends EntitlementSpec {
  /** The org's entitlements_version: a cached snapshot older than the committed one is never served. */
  version: number;
  plan: { id: string; key: string; name: string; rank: number } | null;
  /** The subscription's status, or null when the org has none (default plan or unlimited). */
  status: string | null;
  currency: string;
}

type RatePolicy = { quota: number; windowSec: number };

/** Subscriptions in these states grant their plan; paused and canceled ones fall back to the default plan. */
const GRANTING = new Set(['trialing', 'active', 'past_due']);
const CACHE_TTL_SEC = 300;
const CATALOG_TTL_MS = 30_000;

export interface EntitlementUseCases {
  /** Cached per org (L1 + Redis, versioned): no database round trip on a hit. */
  entitlements(orgId: string): Promise<EntitlementSnapshot>;
  /** The snapshot in this process's L1, synchronously, or undefined (then ask `entitlements`): for per-request hooks. */
  cachedEntitlements(orgId: string): EntitlementSnapshot | undefined;
  /** Throws the 402 BILLING.LIMIT_EXCEEDED problem when `current + adding` would exceed the limit. */
  assertWithinLimit(orgId: string, limit: string, current: number, adding?: number): Promise<void>;
  /**
   * Resolves (from the caches: no query on a hit) to a pure check of a count, for callers that count under
   * a lock inside their own transaction: `check(current)` throws the 402 when one more would not fit.
   */
  limitCheck(orgId: string, limit: string): Promise<(current: number) => void>;
  hasFeature(orgId: string, feature: string): Promise<boolean>;
  /**
   * The plan's request quota per rate-limit window (limit `api.rate`), for the edge's per-org policy; undefined =
   * configuration's. Synchronous on an L1 hit (every request asks: no promise then), else a promise.
   */
  rateLimitFor(orgId: string, windowSec: number): Promise<RatePolicy | undefined> | RatePolicy | undefined;
  /** Drops the cached snapshot (after commit, and from the `billing.entitlements_changed` handler on every worker). */
  invalidate(orgId: string, version: number): Promise<boolean>;
  /** After a committed change: invalidates at the org's current version (the outbox handler repeats it until it lands). */
  refresh(orgId: string): Promise<void>;
}

export function entitlementUseCases(c: BillingContext): EntitlementUseCases {
  const { scope } = c;
  const cache: TenantCache<EntitlementSnapshot> = c.deps.cache.namespace<EntitlementSnapshot>('billing-entitlements', { ttlSec: CACHE_TTL_SEC, version: (s) => s.version });

  async function load(trx: Trx, orgId: string): Promise<EntitlementSnapshot> {
    const customer = await repo.findCustomer(trx, orgId);
    const version = customer?.entitlementsVersion ?? 0;
    const currency = customer?.currency ?? 'USD';
    const sub = await repo.findLiveSubscription(trx, orgId);
    if (sub && GRANTING.has(sub.status)) {
      const [plan, price] = await Promise.all([catalog.findPlan(trx, sub.planId), catalog.findPrice(trx, sub.priceId)]);
      if (plan && price) return { version, plan: { id: plan.id, key: plan.key, name: plan.name, rank: plan.rank }, status: sub.status, currency: sub.currency, ...(await withAddons(trx, orgId, sub, price.entitlements)) };
    }
    const fallback = await catalog.findDefaultPlan(trx);
    if (fallback) {
      const prices = await catalog.listPrices(trx, [fallback.id], { currentOnly: true });
      const price = prices.find((p) => p.currency === currency) ?? prices[0];
      const spec = price?.entitlements ?? { features: [], limits: {}, quotas: {} };
      return { version, plan: { id: fallback.id, key: fallback.key, name: fallback.name, rank: fallback.rank }, status: sub?.status ?? null, currency, ...spec };
    }
    return { version, plan: null, status: sub?.status ?? null, currency, features: [], limits: {}, quotas: {} };
  }

  async function entitlements(orgId: string): Promise<EntitlementSnapshot> {
    // Loads go to the primary: a lagging replica must not refill the cache with an older snapshot.
    return cache.get(orgId, 'snapshot', () => scope.withTenant(orgId, (trx) => load(trx, orgId)));
  }

  /** Public plans with their current prices, per process for a short while (the catalog changes rarely). */
  let catalogCache: { at: number; plans: Array<{ plan: catalog.Plan; prices: catalog.Price[] }> } | undefined;
  async function publicPlans() {
    if (!catalogCache || Date.now() - catalogCache.at > CATALOG_TTL_MS) {
      const plans = await catalog.listPlans(scope.app, { publicOnly: true });
      const prices = await catalog.listPrices(scope.app, plans.map((p) => p.id), { currentOnly: true });
      catalogCache = { at: Date.now(), plans: plans.map((plan) => ({ plan, prices: prices.filter((p) => p.planId === plan.id) })) };
    }
    return catalogCache.plans;
  }

  /** The lowest-ranked public plan above the current one whose price (same currency) allows `needed`. */
  function planThatLifts(plans: Awaited<ReturnType<typeof publicPlans>>, snapshot: EntitlementSnapshot, limit: string, needed: number) {
    for (const { plan, prices } of plans) {
      if (plan.rank <= (snapshot.plan?.rank ?? Number.NEGATIVE_INFINITY) || plan.id === snapshot.plan?.id) continue;
      const price = prices.find((p) => p.currency === snapshot.currency) ?? prices[0];
      if (!price) continue;
      const allowed = price.entitlements.limits[limit];
      if (allowed === undefined || allowed >= needed) return { key: plan.key, name: plan.name, limit: allowed ?? null };
    }
    return null;
  }

  async function limitCheck(orgId: string, limit: string): Promise<(current: number, adding?: number) => void> {
    const snapshot = await entitlements(orgId);
    const allowed = snapshot.limits[limit];
    if (allowed === undefined) return () => {};
    const plans = await publicPlans();
    return (current, adding = 1) => {
      if (current + adding <= allowed) return;
      throw limitExceeded({ limit, allowed, usage: current, plan: snapshot.plan?.name ?? null, upgradeTo: planThatLifts(plans, snapshot, limit, current + adding) });
    };
  }

  return {
    entitlements,
    async assertWithinLimit(orgId, limit, current, adding = 1) {
      (await limitCheck(orgId, limit))(current, adding);
    },
    limitCheck,
    cachedEntitlements: (orgId) => cache.peek(orgId, 'snapshot'),
    rateLimitFor(orgId, windowSec) {
      const policy = (s: EntitlementSnapshot): RatePolicy | undefined => (s.limits['api.rate'] === undefined ? undefined : { quota: s.limits['api.rate'], windowSec });
      const hit = cache.peek(orgId, 'snapshot');
      return hit ? policy(hit) : entitlements(orgId).then(policy);
    },
    async hasFeature(orgId, feature) {
      return (await entitlements(orgId)).features.includes(feature);
    },
    invalidate: (orgId, version) => cache.invalidate(orgId, 'snapshot', version),
    async refresh(orgId) {
      const customer = await scope.withTenant(orgId, (trx) => repo.findCustomer(trx, orgId));
      if (customer) await cache.invalidate(orgId, 'snapshot', customer.entitlementsVersion);
    },
  };
}
