import { Type } from '@sinclair/typebox';
import { actorOf, tenantActorOf as actor } from '../../platform/http/actor.ts';
import { PLATFORM_ADMIN } from '../../platform/http/auth.ts';
import type { App } from '../../platform/http/server.ts';
import { PERMISSIONS } from '../tenancy/index.ts';
import { addMonthsAnchored } from './billing.calendar.ts';
import type { Meter } from './billing.repo.ts';
import {
  AdvanceClockBody,
  AdvanceClockResult,
  CancelBody,
  CatalogPlanSchema,
  ChangePlanBody,
  ChangeResultSchema,
  ChargeQuery,
  ChargeSchema,
  CreatePlanBody,
  CreatePriceBody,
  CreateProductBody,
  CustomerSchema,
  EntitlementsSchema,
  IngestResultSchema,
  MeterSchema,
  OrgParams,
  PlanParams,
  PlanSchema,
  PreviewSchema,
  PriceSchema,
  ProductSchema,
  SubscribeBody,
  SubscriptionSchema,
  TestClockSchema,
  UpdateCustomerBody,
  UpdatePlanBody,
  UsageBody,
  UsageQuery,
  UsageResultSchema,
} from './billing.schemas.ts';
import type { BillingService } from './billing.service.ts';
import type { NewPlanInput, NewPriceInput } from './use-cases/catalog.ts';
import type { UsageEventIn } from './use-cases/usage.ts';
import type { Aggregation, Granularity } from './usage.repo.ts';

/** Org members read the catalog and their entitlements; billing:read/manage for the rest; usage:write to meter. */
export const BILLING_PERMISSIONS = {
  catalog: PERMISSIONS.orgRead,
  read: PERMISSIONS.billingRead,
  manage: PERMISSIONS.billingManage,
  usageWrite: PERMISSIONS.usageWrite,
} as const;

const security = [{ bearer: [] }];
const NoContent = Type.Null({ description: 'Done' });

export function billingRoutes(service: BillingService): (app: App) => Promise<void> {
  return async (app: App) => {
    const perm = BILLING_PERMISSIONS;
    // ---------------------------------------------------------------- catalog, for orgs
    app.get('/orgs/:orgId/billing/catalog', { config: { permission: perm.catalog }, schema: { tags: ['billing'], summary: 'Public plans with their current prices', security, params: OrgParams, response: { 200: Type.Object({ data: Type.Array(CatalogPlanSchema) }) } } }, async () => ({
      data: await service.publicCatalog(),
    }));

    // ---------------------------------------------------------------- customer
    app.get('/orgs/:orgId/billing/customer', { config: { permission: perm.read }, schema: { tags: ['billing'], summary: "The org's billing details (404 until set or subscribed)", security, params: OrgParams, response: { 200: CustomerSchema } } }, async (request) =>
      service.getCustomer((request.params as { orgId: string }).orgId),
    );
    app.patch('/orgs/:orgId/billing/customer', { config: { permission: perm.manage }, schema: { tags: ['billing'], summary: 'Update billing e-mail, address, currency, tax id', security, params: OrgParams, body: UpdateCustomerBody, response: { 200: CustomerSchema } } }, async (request) =>
      service.updateCustomer(actor(request), request.body as Parameters<BillingService['updateCustomer']>[1]),
    );

    // ---------------------------------------------------------------- subscription
    const subRoute = (summary: string, body?: object) => ({ config: { permission: perm.manage }, schema: { tags: ['billing'], summary, security, params: OrgParams, ...(body ? { body } : {}), response: { 200: SubscriptionSchema } } });
    app.get('/orgs/:orgId/billing/subscription', { config: { permission: perm.read }, schema: { tags: ['billing'], summary: 'The live subscription (or the last canceled one)', security, params: OrgParams, response: { 200: SubscriptionSchema } } }, async (request) =>
      service.getSubscription((request.params as { orgId: string }).orgId),
    );
    app.post('/orgs/:orgId/billing/subscription', { config: { permission: perm.manage }, schema: { tags: ['billing'], summary: 'Subscribe to a plan (with or without its trial)', security, params: OrgParams, body: SubscribeBody, response: { 201: SubscriptionSchema } } }, async (request, reply) =>
      reply.code(201).send(await service.subscribe(actor(request), request.body as Parameters<BillingService['subscribe']>[1])),
    );
    app.post('/orgs/:orgId/billing/subscription/preview-change', { config: { permission: perm.read }, schema: { tags: ['billing'], summary: 'Proration preview of a plan change: timing, credit and charge lines (changes nothing)', security, params: OrgParams, body: ChangePlanBody, response: { 200: PreviewSchema } } }, async (request) =>
      service.previewChange((request.params as { orgId: string }).orgId, request.body as { planId: string; interval?: 'month' | 'year' }),
    );
    app.post('/orgs/:orgId/billing/subscription/change', { config: { permission: perm.manage }, schema: { tags: ['billing'], summary: "Change plan: at once with proration, or at period end, by the target plan's rule", security, params: OrgParams, body: ChangePlanBody, response: { 200: ChangeResultSchema } } }, async (request) =>
      service.changePlan(actor(request), request.body as { planId: string; interval?: 'month' | 'year' }),
    );
    app.post('/orgs/:orgId/billing/subscription/cancel', subRoute('Cancel now (crediting unused time) or at period end', CancelBody), async (request) => service.cancel(actor(request), request.body as { atPeriodEnd: boolean }));
    app.post('/orgs/:orgId/billing/subscription/uncancel', subRoute('Take back a cancellation scheduled for the period end'), async (request) => service.uncancel(actor(request)));
    app.post('/orgs/:orgId/billing/subscription/pause', subRoute('Pause: no charges, entitlements fall back to the default plan'), async (request) => service.pause(actor(request)));
    app.post('/orgs/:orgId/billing/subscription/resume', subRoute('Resume a paused subscription'), async (request) => service.resume(actor(request)));
    app.get('/orgs/:orgId/billing/charges', { config: { permission: perm.read }, schema: { tags: ['billing'], summary: 'What the subscription owes: period charges, proration charges and credits (invoiced by issue #14)', security, params: OrgParams, querystring: ChargeQuery, response: { 200: Type.Object({ data: Type.Array(ChargeSchema) }) } } }, async (request) => {
      const q = request.query as { after?: string; limit?: number };
      return { data: await service.listCharges((request.params as { orgId: string }).orgId, q.limit ?? 50, q.after) };
    });

    // ---------------------------------------------------------------- entitlements
    app.get('/orgs/:orgId/billing/entitlements', { config: { permission: perm.catalog }, schema: { tags: ['billing'], summary: 'Features, limits and quotas the org has now', security, params: OrgParams, response: { 200: EntitlementsSchema } } }, async (request) =>
      service.entitlements((request.params as { orgId: string }).orgId),
    );

    // ---------------------------------------------------------------- test clock (non-production)
    app.get('/orgs/:orgId/billing/test-clock', { config: { permission: perm.read }, schema: { tags: ['billing'], summary: "The org's test clock (non-production only)", security, params: OrgParams, response: { 200: TestClockSchema } } }, async (request) =>
      service.getTestClock((request.params as { orgId: string }).orgId),
    );
    app.post('/orgs/:orgId/billing/test-clock', { config: { permission: perm.manage }, schema: { tags: ['billing'], summary: 'Create or advance the test clock; due transitions (trial end, renewals, dunning) run at once', security, params: OrgParams, body: AdvanceClockBody, response: { 200: AdvanceClockResult } } }, async (request) =>
      service.advanceTestClock(actor(request), new Date((request.body as { frozenTime: string }).frozenTime)),
    );
    app.delete('/orgs/:orgId/billing/test-clock', { config: { permission: perm.manage }, schema: { tags: ['billing'], summary: 'Back to the wall clock', security, params: OrgParams, response: { 204: NoContent } } }, async (request, reply) => {
      await service.deleteTestClock(actor(request));
      return reply.code(204).send(null);
    });

    // ---------------------------------------------------------------- usage
    app.post('/orgs/:orgId/usage-events', { config: { permission: perm.usageWrite }, schema: { tags: ['billing'], summary: 'Record usage: one event or a batch of up to 1,000, idempotent by key', security, params: OrgParams, body: UsageBody, response: { 200: IngestResultSchema } } }, async (request) => {
      const body = request.body as UsageEventIn | { events: UsageEventIn[] };
      return service.ingest(actor(request), 'events' in body ? body.events : [body]);
    });
    app.get('/orgs/:orgId/usage', { config: { permission: perm.read }, schema: { tags: ['billing'], summary: 'Usage of a metric per hour/day/month, from rollups', security, params: OrgParams, querystring: UsageQuery, response: { 200: UsageResultSchema } } }, async (request) => {
      const q = request.query as { metric: string; from?: string; to?: string; groupBy?: Granularity; aggregation?: Aggregation };
      const now = new Date();
      const from = q.from ? new Date(Math.floor(new Date(q.from).getTime() / 3_600_000) * 3_600_000) : new Date(Date.UTC(now.getUTCFullYear(), now.getUTCMonth(), 1));
      const to = q.to ? new Date(q.to) : addMonthsAnchored(from, 1);
      return service.usage((request.params as { orgId: string }).orgId, { metric: q.metric, from, to, groupBy: q.groupBy ?? 'day', aggregation: q.aggregation });
    });

    // ---------------------------------------------------------------- catalog administration (platform admins)
    const admin = (summary: string, extra: object = {}) => ({ config: { permission: PLATFORM_ADMIN }, schema: { tags: ['billing-admin'], summary, security, ...extra } });
    app.get('/admin/billing/products', admin('List products', { response: { 200: Type.Object({ data: Type.Array(ProductSchema) }) } }), async () => ({ data: await service.listProducts() }));
    app.post('/admin/billing/products', admin('Create a product', { body: CreateProductBody, response: { 201: ProductSchema } }), async (request, reply) =>
      reply.code(201).send(await service.createProduct(actorOf(request), request.body as { key: string; name: string; description?: string })),
    );
    app.get('/admin/billing/plans', admin('Every plan with every price version', { response: { 200: Type.Object({ data: Type.Array(CatalogPlanSchema) }) } }), async () => ({ data: await service.listPlans() }));
    app.post('/admin/billing/plans', admin('Create a plan', { body: CreatePlanBody, response: { 201: PlanSchema } }), async (request, reply) =>
      reply.code(201).send(await service.createPlan(actorOf(request), request.body as NewPlanInput)),
    );
    app.patch('/admin/billing/plans/:planId', admin('Update a plan (name, rank, change timing, visibility, default)', { params: PlanParams, body: UpdatePlanBody, response: { 200: PlanSchema } }), async (request) =>
      service.updatePlan(actorOf(request), (request.params as { planId: string }).planId, request.body as Parameters<BillingService['updatePlan']>[2]),
    );
    app.get('/admin/billing/plans/:planId/prices', admin('Every price version of a plan, newest first', { params: PlanParams, response: { 200: Type.Object({ data: Type.Array(PriceSchema) }) } }), async (request) => ({
      data: await service.listPrices((request.params as { planId: string }).planId),
    }));
    app.post('/admin/billing/plans/:planId/prices', admin('Add a price version (immutable; subscriptions keep theirs until changed)', { params: PlanParams, body: CreatePriceBody, response: { 201: PriceSchema } }), async (request, reply) =>
      reply.code(201).send(await service.addPrice(actorOf(request), (request.params as { planId: string }).planId, request.body as NewPriceInput)),
    );
    app.get('/admin/billing/meters', admin('List meters', { response: { 200: Type.Object({ data: Type.Array(MeterSchema) }) } }), async () => ({ data: await service.listMeters() }));
    app.post('/admin/billing/meters', admin('Create or update a meter (aggregation of a usage metric)', { body: MeterSchema, response: { 200: MeterSchema } }), async (request) =>
      service.upsertMeter(actorOf(request), request.body as Meter),
    );
  };
}
