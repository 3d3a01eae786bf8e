import type { ActorContext } from '../../../platform/http/actor.ts';
import { newId } from '../../../platform/ids.ts';
import { PLATFORM_AUDIT_TENANT } from '../../audit/index.ts';
import { invalidPrice, keyTaken, planNotFound, productNotFound, unknownCurrency } from '../billing.errors.ts';
import { isCurrency } from '../billing.money.ts';
import { validatePricing } from '../billing.pricing.ts';
import * as repo from '../billing.repo.ts';
import type { EntitlementSpec, Meter, Plan, PlanChanges, Price, Product } from '../billing.repo.ts';
import { tenantCtx, type BillingContext } from './context.ts';

export interface NewPlanInput {
  productId: string;
  key: string;
  name: string;
  description?: string;
  rank?: number;
  upgradeTiming?: Plan['upgradeTiming'];
  downgradeTiming?: Plan['downgradeTiming'];
  public?: boolean;
  isDefault?: boolean;
}

export type NewPriceInput = Omit<Price, 'id' | 'planId' | 'version' | 'createdAt' | 'entitlements' | 'tiers' | 'flatAmount' | 'unitAmount' | 'packageSize' | 'metric' | 'trialDays' | 'usageType' | 'perSeat'> &
  Partial<Pick<Price, 'tiers' | 'flatAmount' | 'unitAmount' | 'packageSize' | 'metric' | 'trialDays' | 'usageType' | 'perSeat'>> & { entitlements?: Partial<EntitlementSpec> };

export interface CatalogPlan extends Plan {
  /** The current (newest) version per currency and interval. */
  prices: Price[];
}

export interface CatalogUseCases {
  createProduct(ctx: ActorContext, input: { key: string; name: string; description?: string }): Promise<Product>;
  listProducts(): Promise<Product[]>;
  createPlan(ctx: ActorContext, input: NewPlanInput): Promise<Plan>;
  updatePlan(ctx: ActorContext, planId: string, changes: PlanChanges): Promise<Plan>;
  /** Every plan (admin), with every price version. */
  listPlans(): Promise<CatalogPlan[]>;
  /** A new immutable version of the plan's price for its currency and interval. */
  addPrice(ctx: ActorContext, planId: string, input: NewPriceInput): Promise<Price>;
  listPrices(planId: string): Promise<Price[]>;
  /** What orgs see: public plans with their current prices. */
  publicCatalog(): Promise<CatalogPlan[]>;
  upsertMeter(ctx: ActorContext, meter: Meter): Promise<Meter>;
  listMeters(): Promise<Meter[]>;
}

export function catalogUseCases(c: BillingContext): CatalogUseCases {
  const { scope } = c;
  // Catalog writes are platform-admin actions: audited on the platform chain, in the same transaction.
  const inPlatform = <T>(fn: (trx: repo.Trx) => Promise<T>) => scope.withTenant(PLATFORM_AUDIT_TENANT, fn);
  const audit = (trx: repo.Trx, ctx: ActorContext, action: string, target: { type: string; id: string }, changes: Record<string, unknown>) =>
    c.record(trx, tenantCtx(ctx, PLATFORM_AUDIT_TENANT), action, target, changes);

  async function withPrices(plans: Plan[], currentOnly: boolean): Promise<CatalogPlan[]> {
    const prices = await scope.withTenantRead(PLATFORM_AUDIT_TENANT, (trx) => repo.listPrices(trx, plans.map((p) => p.id), { currentOnly }));
    return plans.map((p) => ({ ...p, prices: prices.filter((x) => x.planId === p.id) }));
  }

  return {
    async createProduct(ctx, input) {
      return inPlatform(async (trx) => {
        const product = await repo.insertProduct(trx, { id: newId(), key: input.key, name: input.name, description: input.description ?? '' });
        if (!product) throw keyTaken('product', input.key);
        await audit(trx, ctx, 'billing.product.create', { type: 'billing_product', id: product.id }, { key: input.key, name: input.name });
        return product;
      });
    },
    listProducts: () => scope.withTenantRead(PLATFORM_AUDIT_TENANT, (trx) => repo.listProducts(trx)),

    async createPlan(ctx, input) {
      return inPlatform(async (trx) => {
        if (!(await repo.findProduct(trx, input.productId))) throw productNotFound();
        const plan = await repo.insertPlan(trx, {
          id: newId(),
          productId: input.productId,
          key: input.key,
          name: input.name,
          description: input.description ?? '',
          rank: input.rank ?? 0,
          upgradeTiming: input.upgradeTiming ?? 'now',
          downgradeTiming: input.downgradeTiming ?? 'period_end',
          public: input.public ?? true,
          isDefault: input.isDefault ?? false,
        });
        if (!plan) throw keyTaken('plan', input.key);
        await audit(trx, ctx, 'billing.plan.create', { type: 'billing_plan', id: plan.id }, { ...input });
        return plan;
      });
    },

    async updatePlan(ctx, planId, changes) {
      return inPlatform(async (trx) => {
        const plan = await repo.updatePlan(trx, planId, changes);
        if (!plan) throw planNotFound();
        await audit(trx, ctx, 'billing.plan.update', { type: 'billing_plan', id: planId }, { ...changes });
        return plan;
      });
    },

    async listPlans() {
      return withPrices(await scope.withTenantRead(PLATFORM_AUDIT_TENANT, (trx) => repo.listPlans(trx, { publicOnly: false })), false);
    },

    async addPrice(ctx, planId, input) {
      if (!isCurrency(input.currency)) throw unknownCurrency(input.currency);
      const price = {
        id: newId(),
        planId,
        currency: input.currency,
        interval: input.interval,
        usageType: input.usageType ?? 'licensed',
        model: input.model,
        perSeat: input.perSeat ?? false,
        flatAmount: input.flatAmount ?? 0,
        unitAmount: input.unitAmount ?? 0,
        tiers: input.tiers ?? [],
        packageSize: input.packageSize ?? 1,
        metric: input.metric ?? null,
        trialDays: input.trialDays ?? 0,
        entitlements: { features: input.entitlements?.features ?? [], limits: input.entitlements?.limits ?? {}, quotas: input.entitlements?.quotas ?? {}, ...(input.entitlements?.enforcement ? { enforcement: input.entitlements.enforcement } : {}) },
      };
      const problem = validatePricing(price);
      if (problem) throw invalidPrice(problem);
      if (price.usageType === 'metered' && !price.metric) throw invalidPrice('a metered price names the metric it charges');
      if (price.perSeat && price.model !== 'per_unit' && price.model !== 'tiered' && price.model !== 'volume') throw invalidPrice('a per-seat price is per_unit, tiered or volume');
      return inPlatform(async (trx) => {
        if (!(await repo.findPlan(trx, planId))) throw planNotFound();
        const created = await repo.insertPrice(trx, price);
        await audit(trx, ctx, 'billing.price.create', { type: 'billing_price', id: created.id }, { planId, version: created.version, currency: created.currency, interval: created.interval, model: created.model });
        return created;
      });
    },

    async listPrices(planId) {
      return scope.withTenantRead(PLATFORM_AUDIT_TENANT, async (trx) => {
        if (!(await repo.findPlan(trx, planId))) throw planNotFound();
        return repo.listPrices(trx, [planId], { currentOnly: false });
      });
    },

    async publicCatalog() {
      return withPrices(await scope.withTenantRead(PLATFORM_AUDIT_TENANT, (trx) => repo.listPlans(trx, { publicOnly: true })), true);
    },

    async upsertMeter(ctx, meter) {
      return inPlatform(async (trx) => {
        const m = await repo.upsertMeter(trx, meter);
        await audit(trx, ctx, 'billing.meter.upsert', { type: 'billing_meter', id: meter.key }, { ...meter });
        return m;
      });
    },
    listMeters: () => repo.listMeters(scope.app),
  };
}
