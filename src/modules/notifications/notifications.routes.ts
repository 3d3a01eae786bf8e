import { Type } from '@sinclair/typebox';
import { tenantActorOf as actor } from '../../platform/http/actor.ts';
import { accessOf } from '../../platform/http/auth.ts';
import { DEFAULT_PAGE_SIZE, pageQuery } from '../../platform/http/pagination.ts';
import { Page, Uuid, DateTime } from '../../platform/http/schemas.ts';
import type { App } from '../../platform/http/server.ts';
import { PERMISSIONS } from '../tenancy/index.ts';
import { WEBHOOK_EVENT_TYPES } from './notifications.events.ts';
import { MAX_URL_LENGTH } from '../../platform/net/url-policy.ts';
import type { WebhooksService } from './notifications.service.ts';

/** A `Date` in the service, an ISO 8601 string on the wire (the serializer calls toISOString). */
const NullableString = Type.Union([Type.String(), Type.Null()]);
const NullableInt = Type.Union([Type.Integer(), Type.Null()]);
const EventType = Type.Unsafe<string>({ type: 'string', enum: [...WEBHOOK_EVENT_TYPES], description: 'A domain event name' });

const Url = Type.String({
  minLength: 1,
  maxLength: MAX_URL_LENGTH,
  description: 'https URL receiving POSTs (http://127.0.0.1 or localhost only outside production); no private addresses in production',
});
const Events = Type.Array(EventType, { minItems: 1, maxItems: WEBHOOK_EVENT_TYPES.length * 2 });
const Description = Type.String({ maxLength: 500 });

const WebhookSchema = Type.Object(
  {
    id: Uuid(),
    url: Type.String(),
    description: Type.String(),
    events: Type.Array(Type.String()),
    active: Type.Boolean(),
    consecutiveFailures: Type.Integer({ description: 'Finally failed deliveries in a row; the endpoint is disabled at the configured limit' }),
    disabledReason: NullableString,
    createdAt: DateTime(),
    updatedAt: DateTime(),
  },
  { additionalProperties: false },
);

const CreatedWebhookSchema = Type.Object(
  {
    ...WebhookSchema.properties,
    secret: Type.String({ description: 'Signing secret (whsec_…, 256 bits). Shown only in this response: store it now.' }),
  },
  { additionalProperties: false },
);

const DeliverySchema = Type.Object(
  {
    id: Uuid(),
    webhookId: Uuid(),
    eventId: Uuid('Also the Webhook-Id header: receivers deduplicate on it'),
    eventType: Type.String(),
    status: Type.Unsafe<string>({ type: 'string', enum: ['pending', 'succeeded', 'failed', 'dead'] }),
    attempts: Type.Integer(),
    lastStatusCode: NullableInt,
    lastErrorKind: Type.Union([Type.String({ description: 'http_4xx, http_408, http_429, http_5xx, timeout, network, circuit_open, bulkhead_full, forbidden_address, endpoint_disabled' }), Type.Null()]),
    lastDurationMs: NullableInt,
    createdAt: DateTime(),
    updatedAt: DateTime(),
    deliveredAt: Type.Union([DateTime(), Type.Null()]),
  },
  { additionalProperties: false },
);

const OrgParams = Type.Object({ orgId: Uuid() });
const WebhookParams = Type.Object({ orgId: Uuid(), webhookId: Uuid() });
const DeliveryParams = Type.Object({ orgId: Uuid(), webhookId: Uuid(), deliveryId: Uuid() });
const ListQuery = Type.Object(pageQuery, { additionalProperties: false });

const CreateBody = Type.Object(
  { url: Url, events: Events, description: Type.Optional(Description), active: Type.Optional(Type.Boolean()) },
  { additionalProperties: false },
);
const UpdateBody = Type.Object(
  { url: Type.Optional(Url), events: Type.Optional(Events), description: Type.Optional(Description), active: Type.Optional(Type.Boolean()) },
  { additionalProperties: false, minProperties: 1 },
);

/** owner and admin (tenancy's role map). */
export const WEBHOOKS_MANAGE = PERMISSIONS.webhooksManage;

export async function notificationsRoutes(app: App, opts: { service: WebhooksService }): Promise<void> {
  const { service } = opts;
  const tags = ['webhooks'];
  const security = [{ bearer: [] }];
  const config = { permission: WEBHOOKS_MANAGE };

  app.post(
    '/orgs/:orgId/webhooks',
    {
      config,
      schema: {
        tags,
        security,
        summary: 'Register a webhook endpoint (the signing secret is returned once, here)',
        params: OrgParams,
        body: CreateBody,
        response: { 201: CreatedWebhookSchema },
      },
    },
    async (request, reply) => {
      const { webhook, secret } = await service.create(actor(request), request.body);
      reply.code(201).header('location', `${request.url}/${webhook.id}`).header('cache-control', 'no-store');
      return { ...webhook, secret };
    },
  );

  app.get(
    '/orgs/:orgId/webhooks',
    { config, schema: { tags, security, summary: 'List webhook endpoints', params: OrgParams, querystring: ListQuery, response: { 200: Page(WebhookSchema) } } },
    async (request) => service.list(accessOf(request).orgId, { limit: request.query.limit ?? DEFAULT_PAGE_SIZE, cursor: request.query.cursor }),
  );

  app.get(
    '/orgs/:orgId/webhooks/:webhookId',
    { config, schema: { tags, security, summary: 'Get a webhook endpoint', params: WebhookParams, response: { 200: WebhookSchema } } },
    async (request) => service.get(accessOf(request).orgId, request.params.webhookId),
  );

  app.patch(
    '/orgs/:orgId/webhooks/:webhookId',
    {
      config,
      schema: {
        tags,
        security,
        summary: 'Update a webhook endpoint (active: true re-enables a disabled one and resets its failure count)',
        params: WebhookParams,
        body: UpdateBody,
        response: { 200: WebhookSchema },
      },
    },
    async (request) => service.update(actor(request), request.params.webhookId, request.body),
  );

  app.delete(
    '/orgs/:orgId/webhooks/:webhookId',
    {
      config,
      schema: { tags, security, summary: 'Delete a webhook endpoint and its delivery log', params: WebhookParams, response: { 204: Type.Null() } },
    },
    async (request, reply) => {
      await service.remove(actor(request), request.params.webhookId);
      return reply.code(204).send(null);
    },
  );

  app.get(
    '/orgs/:orgId/webhooks/:webhookId/deliveries',
    {
      config,
      schema: {
        tags,
        security,
        summary: 'Delivery log of an endpoint, newest first',
        params: WebhookParams,
        querystring: ListQuery,
        response: { 200: Page(DeliverySchema) },
      },
    },
    async (request) =>
      service.listDeliveries(accessOf(request).orgId, request.params.webhookId, { limit: request.query.limit ?? DEFAULT_PAGE_SIZE, cursor: request.query.cursor }),
  );

  app.post(
    '/orgs/:orgId/webhooks/:webhookId/deliveries/:deliveryId/redeliver',
    {
      config,
      schema: {
        tags,
        security,
        summary: 'Send a delivery again (same Webhook-Id and body) as a new durable job; 409 while it is pending',
        params: DeliveryParams,
        response: { 202: DeliverySchema },
      },
    },
    async (request, reply) => {
      const delivery = await service.redeliver(actor(request), request.params.webhookId, request.params.deliveryId);
      reply.code(202);
      return delivery;
    },
  );
}
