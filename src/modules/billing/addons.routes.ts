import { Type } from '@sinclair/typebox';
import { actorOf, tenantActorOf as actor } from '../../platform/http/actor.ts';
import { PLATFORM_ADMIN } from '../../platform/http/auth.ts';
import { DateTime, Uuid } from '../../platform/http/schemas.ts';
import type { App } from '../../platform/http/server.ts';
import { BILLING_PERMISSIONS } from './billing.routes.ts';
import { ChargeSchema, OrgParams } from './billing.schemas.ts';
import type { BillingService } from './billing.service.ts';

const security = [{ bearer: [] }];
const Grants = Type.Object(
  {
    features: Type.Array(Type.String({ minLength: 1, maxLength: 64 }), { maxItems: 100 }),
    limits: Type.Record(Type.String({ maxLength: 64 }), Type.Integer({ minimum: 0 }), { description: 'Added per unit to the plan\'s limits (an unlimited limit stays unlimited)' }),
    quotas: Type.Record(Type.String({ maxLength: 64 }), Type.Number({ minimum: 0 }), { description: 'Added per unit to the plan\'s quotas' }),
  },
  { additionalProperties: false },
);
const AddonSchema = Type.Object(
  {
    id: Uuid(),
    key: Type.String(),
    name: Type.String(),
    currency: Type.String(),
    interval: Type.Union([Type.Literal('month'), Type.Literal('year')]),
    amount: Type.Integer({ description: 'Per unit and period, in minor units' }),
    entitlements: Grants,
    public: Type.Boolean(),
    createdAt: DateTime(),
  },
  { additionalProperties: false },
);
const CreateAddonBody = Type.Object(
  {
    key: Type.String({ pattern: '^[a-z][a-z0-9_.-]{1,63}$' }),
    name: Type.String({ minLength: 1, maxLength: 100 }),
    currency: Type.String({ pattern: '^[A-Z]{3}$' }),
    interval: Type.Union([Type.Literal('month'), Type.Literal('year')]),
    amount: Type.Integer({ minimum: 0 }),
    public: Type.Optional(Type.Boolean()),
    entitlements: Type.Optional(Type.Partial(Grants, { additionalProperties: false })),
  },
  { additionalProperties: false, examples: [{ key: 'requests-100k', name: '100k API requests', currency: 'USD', interval: 'month', amount: 1000, entitlements: { quotas: { 'api.requests': 100000 } } }] },
);
const SubscriptionAddonSchema = Type.Object(
  { id: Uuid(), subscriptionId: Uuid(), addonId: Uuid(), quantity: Type.Integer(), addedAt: DateTime(), removedAt: Type.Union([DateTime(), Type.Null()]), version: Type.Integer(), addon: AddonSchema },
  { additionalProperties: false },
);
const AddonParams = Type.Object({ orgId: Uuid(), addonId: Uuid() });
const SetAddonBody = Type.Object({ quantity: Type.Integer({ minimum: 0, maximum: 10_000, description: '0 removes the add-on' }) }, { additionalProperties: false, examples: [{ quantity: 2 }] });
const SetAddonResult = Type.Object(
  {
    addon: Type.Union([Type.Object({ id: Uuid(), subscriptionId: Uuid(), addonId: Uuid(), quantity: Type.Integer(), addedAt: DateTime(), removedAt: Type.Union([DateTime(), Type.Null()]), version: Type.Integer() }, { additionalProperties: false }), Type.Null()]),
    charges: Type.Array(ChargeSchema, { description: 'The prorated credit and charge lines of the change (none in a trial)' }),
  },
  { additionalProperties: false },
);

/** Add-ons: the catalog (platform admins), the org's view, and setting a quantity on the subscription. */
export function addonRoutes(service: BillingService): (app: App) => Promise<void> {
  return async (app: App) => {
    app.get('/admin/billing/addons', { config: { permission: PLATFORM_ADMIN }, schema: { tags: ['billing-admin'], summary: 'List add-ons', security, response: { 200: Type.Object({ data: Type.Array(AddonSchema) }) } } }, async () => ({
      data: await service.listAddons({ publicOnly: false }),
    }));
    app.post('/admin/billing/addons', { config: { permission: PLATFORM_ADMIN }, schema: { tags: ['billing-admin'], summary: 'Create an add-on (insert-only: a new price is a new add-on)', security, body: CreateAddonBody, response: { 201: AddonSchema } } }, async (request, reply) =>
      reply.code(201).send(await service.createAddon(actorOf(request), request.body as Parameters<BillingService['createAddon']>[1])),
    );
    app.get('/orgs/:orgId/billing/addons', { config: { permission: BILLING_PERMISSIONS.read }, schema: { tags: ['billing'], summary: 'Add-ons on the subscription, and the public ones available', security, params: OrgParams, response: { 200: Type.Object({ data: Type.Array(SubscriptionAddonSchema), available: Type.Array(AddonSchema) }) } } }, async (request) => {
      const orgId = (request.params as { orgId: string }).orgId;
      const [data, available] = await Promise.all([service.subscriptionAddons(orgId), service.listAddons({ publicOnly: true })]);
      return { data, available };
    });
    app.put('/orgs/:orgId/billing/subscription/addons/:addonId', { config: { permission: BILLING_PERMISSIONS.manage }, schema: { tags: ['billing'], summary: 'Set an add-on\'s quantity on the subscription (0 removes it), prorated for the rest of the period', security, params: AddonParams, body: SetAddonBody, response: { 200: SetAddonResult } } }, async (request) =>
      service.setAddon(actor(request), (request.params as { addonId: string }).addonId, (request.body as { quantity: number }).quantity),
    );
  };
}
