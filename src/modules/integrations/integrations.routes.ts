import { Type } from '@sinclair/typebox';
import { tenantActorOf as actor } from '../../platform/http/actor.ts';
import { accessOf } from '../../platform/http/auth.ts';
import { DEFAULT_PAGE_SIZE, pageQuery } from '../../platform/http/pagination.ts';
import { DateTime, Page, Uuid } from '../../platform/http/schemas.ts';
import type { App } from '../../platform/http/server.ts';
import { PERMISSIONS } from '../tenancy/index.ts';
import type { IntegrationsService } from './integrations.service.ts';

/** owner and admin (tenancy's role map). */
export const INTEGRATIONS_MANAGE = PERMISSIONS.integrationsManage;

const Nullable = <T extends Parameters<typeof Type.Union>[0][number]>(t: T) => Type.Union([t, Type.Null()]);
const Name = Type.String({ minLength: 1, maxLength: 200 });
const EventName = Type.String({ minLength: 3, maxLength: 100, pattern: '^[a-z0-9_]+\\.[a-z0-9_.]+$' });
const Events = Type.Array(EventName, { minItems: 1, maxItems: 50 });
/** Connector-specific; checked against the connector's declared schema (GET /integrations/connectors). */
const Settings = Type.Record(Type.String({ maxLength: 100 }), Type.Unknown(), { maxProperties: 50, description: 'Checked against the connector’s schema' });

const ConnectionSchema = Type.Object(
  {
    id: Uuid(),
    connector: Type.String(),
    name: Type.String(),
    config: Type.Record(Type.String(), Type.Unknown()),
    events: Type.Array(Type.String()),
    active: Type.Boolean(),
    lastSuccessAt: Nullable(DateTime()),
    lastErrorAt: Nullable(DateTime()),
    lastError: Nullable(Type.String()),
    consecutiveFailures: Type.Integer(),
    backfillStatus: Type.Unsafe<string>({ type: 'string', enum: ['idle', 'running', 'done'] }),
    backfillCursor: Nullable(Type.String({ description: 'Where a resumed backfill continues' })),
    backfillCount: Type.Integer({ description: 'Deliveries the current backfill has queued' }),
    health: Type.Object(
      {
        backlog: Type.Integer({ description: 'Deliveries pending' }),
        deadLetters: Type.Integer(),
        breaker: Type.String({ description: 'closed, open or half-open (this process)' }),
      },
      { additionalProperties: false },
    ),
    createdAt: DateTime(),
    updatedAt: DateTime(),
  },
  { additionalProperties: false },
);

const DeliverySchema = Type.Object(
  {
    id: Uuid(),
    connectionId: Uuid(),
    eventId: Uuid(),
    eventName: Type.String(),
    status: Type.Unsafe<string>({ type: 'string', enum: ['pending', 'succeeded', 'dead'] }),
    attempts: Type.Integer(),
    lastStatusCode: Nullable(Type.Integer()),
    lastError: Nullable(Type.String()),
    createdAt: DateTime(),
    updatedAt: DateTime(),
    deliveredAt: Nullable(DateTime()),
  },
  { additionalProperties: false },
);

const ConnectorSchema = Type.Object(
  { name: Type.String(), description: Type.String(), events: Type.Array(Type.String()), config: Type.Unknown(), credentials: Type.Unknown() },
  { additionalProperties: false },
);

const OrgParams = Type.Object({ orgId: Uuid() });
const ConnParams = Type.Object({ orgId: Uuid(), integrationId: Uuid() });
const ListQuery = Type.Object(pageQuery, { additionalProperties: false });
const DeliveryQuery = Type.Object(
  { ...pageQuery, status: Type.Optional(Type.Unsafe<'pending' | 'succeeded' | 'dead'>({ type: 'string', enum: ['pending', 'succeeded', 'dead'] })) },
  { additionalProperties: false },
);
const CreateBody = Type.Object(
  { connector: Type.String({ minLength: 1, maxLength: 50 }), name: Name, config: Settings, credentials: Settings, events: Events, active: Type.Optional(Type.Boolean()) },
  { additionalProperties: false },
);
const UpdateBody = Type.Object(
  { name: Type.Optional(Name), config: Type.Optional(Settings), credentials: Type.Optional(Settings), events: Type.Optional(Events), active: Type.Optional(Type.Boolean()) },
  { additionalProperties: false, minProperties: 1 },
);
const ReplayBody = Type.Object(
  { deliveryIds: Type.Optional(Type.Array(Uuid(), { minItems: 1, maxItems: 500, description: 'Only these dead letters (default: up to 500 oldest)' })) },
  { additionalProperties: false },
);
const BackfillBody = Type.Object({ restart: Type.Optional(Type.Boolean({ description: 'Start over instead of resuming from the cursor' })) }, { additionalProperties: false });

export async function integrationsRoutes(app: App, opts: { service: IntegrationsService }): Promise<void> {
  const { service } = opts;
  const tags = ['integrations'];
  const security = [{ bearer: [] }];
  const config = { permission: INTEGRATIONS_MANAGE };
  const base = '/orgs/:orgId/integrations';
  const page = (q: { limit?: number; cursor?: string }) => ({ limit: q.limit ?? DEFAULT_PAGE_SIZE, cursor: q.cursor });

  app.get(
    `${base}/connectors`,
    { config, schema: { tags, security, summary: 'Connectors available, with their config and credentials schemas and the events they consume', params: OrgParams, response: { 200: Type.Object({ data: Type.Array(ConnectorSchema) }, { additionalProperties: false }) } } },
    async () => ({ data: service.connectors() }),
  );

  app.post(
    base,
    { config, schema: { tags, security, summary: 'Connect an integration (credentials are stored encrypted and never returned)', params: OrgParams, body: CreateBody, response: { 201: ConnectionSchema } } },
    async (request, reply) => {
      const c = await service.create(actor(request), request.body);
      reply.code(201).header('location', `${request.url}/${c.id}`);
      return c;
    },
  );

  app.get(
    base,
    { config, schema: { tags, security, summary: 'List integration connections with their health', params: OrgParams, querystring: ListQuery, response: { 200: Page(ConnectionSchema) } } },
    async (request) => service.list(accessOf(request).orgId, page(request.query)),
  );

  app.get(
    `${base}/:integrationId`,
    { config, schema: { tags, security, summary: 'Get a connection and its health (last success, last error, backlog, dead letters)', params: ConnParams, response: { 200: ConnectionSchema } } },
    async (request) => service.get(accessOf(request).orgId, request.params.integrationId),
  );

  app.patch(
    `${base}/:integrationId`,
    { config, schema: { tags, security, summary: 'Update a connection (credentials: replace them)', params: ConnParams, body: UpdateBody, response: { 200: ConnectionSchema } } },
    async (request) => service.update(actor(request), request.params.integrationId, request.body),
  );

  app.delete(
    `${base}/:integrationId`,
    { config, schema: { tags, security, summary: 'Delete a connection and its delivery log', params: ConnParams, response: { 204: Type.Null() } } },
    async (request, reply) => {
      await service.remove(actor(request), request.params.integrationId);
      return reply.code(204).send(null);
    },
  );

  app.get(
    `${base}/:integrationId/deliveries`,
    { config, schema: { tags, security, summary: 'Delivery log of a connection, newest first (status=dead: the dead letters)', params: ConnParams, querystring: DeliveryQuery, response: { 200: Page(DeliverySchema) } } },
    async (request) => service.listDeliveries(accessOf(request).orgId, request.params.integrationId, { ...page(request.query), status: request.query.status }),
  );

  app.post(
    `${base}/:integrationId/replay`,
    { config, schema: { tags, security, summary: 'Replay dead letters through the same delivery path', params: ConnParams, body: ReplayBody, response: { 202: Type.Object({ replayed: Type.Integer() }, { additionalProperties: false }) } } },
    async (request, reply) => {
      const r = await service.replay(actor(request), request.params.integrationId, request.body?.deliveryIds);
      reply.code(202);
      return r;
    },
  );

  app.post(
    `${base}/:integrationId/backfill`,
    { config, schema: { tags, security, summary: 'Send history through the connection (resumes from its cursor unless restart)', params: ConnParams, body: BackfillBody, response: { 202: ConnectionSchema } } },
    async (request, reply) => {
      const c = await service.backfill(actor(request), request.params.integrationId, request.body?.restart ?? false);
      reply.code(202);
      return c;
    },
  );
}
