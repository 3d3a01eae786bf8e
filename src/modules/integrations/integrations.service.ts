import { Value } from '@sinclair/typebox/value';
import { createSecretBox } from '../../platform/crypto/secret-box.ts';
import { CREDENTIALS_PURPOSE } from './integrations.connector.ts';
import { isUniqueViolation } from '../../platform/db/constraint-errors.ts';
import type { DbScope } from '../../platform/db/database.ts';
import type { TenantActorContext } from '../../platform/http/actor.ts';
import { decodeCursor, listFingerprint, toPage, type KeysetPosition } from '../../platform/http/pagination.ts';
import { isUuid, newId } from '../../platform/ids.ts';
import type { EventPublisher } from '../../platform/outbox/publisher.ts';
import type { Audit } from '../audit/index.ts';
import type { AnyConnector } from './integrations.connector.ts';
import { requestDelivery, type IntegrationDelivery } from './integrations.delivery.ts';
import { connectionNotFound, invalidConfig, nameTaken, unknownConnector } from './integrations.errors.ts';
import { BACKFILL_REQUESTED } from './integrations.events.ts';
import * as repo from './integrations.repo.ts';
import type { Connection, Delivery, DeliveryStatus, IntegrationsTables, Trx } from './integrations.repo.ts';
import type { UrlPolicy } from '../../platform/net/url-policy.ts';

export interface IntegrationsServiceDeps {
  scope: DbScope<IntegrationsTables>;
  events: EventPublisher;
  audit: Audit;
  connectors: ReadonlyMap<string, AnyConnector>;
  delivery: IntegrationDelivery;
  secretKey: Buffer;
  urlRules: UrlPolicy;
}

export interface CreateConnectionInput {
  connector: string;
  name: string;
  config: Record<string, unknown>;
  credentials: Record<string, unknown>;
  events: string[];
  active?: boolean;
}
export type UpdateConnectionInput = Partial<Omit<CreateConnectionInput, 'connector'>>;

/** A connection with its health: last success, last error, backlog, dead letters, breaker. */
export interface ConnectionView extends Connection {
  health: { backlog: number; deadLetters: number; breaker: string };
}

export type Page<T> = ReturnType<typeof toPage<T>>;

export interface IntegrationsService {
  connectors(): Array<{ name: string; description: string; events: string[]; config: unknown; credentials: unknown }>;
  create(ctx: TenantActorContext, input: CreateConnectionInput): Promise<ConnectionView>;
  list(tenantId: string, q: { limit: number; cursor?: string }): Promise<Page<ConnectionView>>;
  get(tenantId: string, id: string): Promise<ConnectionView>;
  update(ctx: TenantActorContext, id: string, input: UpdateConnectionInput): Promise<ConnectionView>;
  remove(ctx: TenantActorContext, id: string): Promise<void>;
  listDeliveries(tenantId: string, id: string, q: { status?: DeliveryStatus; limit: number; cursor?: string }): Promise<Page<Delivery>>;
  /** Dead letters back to pending, each as a new durable delivery request. */
  replay(ctx: TenantActorContext, id: string, deliveryIds?: string[]): Promise<{ replayed: number }>;
  /** Starts (or resumes from its cursor) a backfill of history through the same delivery path. */
  backfill(ctx: TenantActorContext, id: string, restart: boolean): Promise<ConnectionView>;
}

const ID_POSITION = (k: KeysetPosition) => typeof k[1] === 'string' && isUuid(k[1]);
const auditContext = (ctx: TenantActorContext) => ({ actor: ctx.actor, requestId: ctx.requestId, ip: ctx.ip });
export const REPLAY_LIMIT = 500;

export function createIntegrationsService(deps: IntegrationsServiceDeps): IntegrationsService {
  const { scope, audit } = deps;

  function connectorOf(name: string): AnyConnector {
    const c = deps.connectors.get(name);
    if (!c) throw unknownConnector(name);
    return c;
  }

  /** Schema errors as one sentence (first few), never echoing values (they may be secrets). */
  function check(schema: AnyConnector['config'], value: unknown, what: string): void {
    const errors = [...Value.Errors(schema, value)].slice(0, 3);
    if (errors.length > 0) throw invalidConfig(`${what}: ${errors.map((e) => `${e.path || '/'} ${e.message}`).join('; ')}`);
  }

  async function validate(c: AnyConnector, input: { config?: Record<string, unknown>; credentials?: Record<string, unknown>; events?: string[] }) {
    if (input.config !== undefined) {
      check(c.config, input.config, 'config');
      const problem = await c.validate?.(input.config as never, deps.urlRules);
      if (problem) throw invalidConfig(`config: ${problem}`);
    }
    if (input.credentials !== undefined) check(c.credentials, input.credentials, 'credentials');
    const unsupported = input.events?.filter((e) => !c.events.includes(e)) ?? [];
    if (unsupported.length > 0) throw invalidConfig(`events: ${c.name} does not consume ${unsupported.join(', ')}`);
  }

  async function view(trx: Trx, tenantId: string, c: Connection): Promise<ConnectionView> {
    const counts = await repo.deliveryCounts(trx, tenantId, c.id);
    return { ...c, health: { backlog: counts.backlog, deadLetters: counts.dead, breaker: deps.delivery.breakerState(c.connector, c.id) } };
  }

  async function mustFind(trx: Trx, tenantId: string, id: string, lock = false): Promise<Connection> {
    const c = await repo.findConnection(trx, tenantId, id, lock);
    if (!c) throw connectionNotFound();
    return c;
  }

  const seal = (credentials: Record<string, unknown>) => createSecretBox(deps.secretKey, CREDENTIALS_PURPOSE).seal(JSON.stringify(credentials));

  return {
    connectors: () => [...deps.connectors.values()].map((c) => ({ name: c.name, description: c.description, events: [...c.events], config: c.config, credentials: c.credentials })),

    async create(ctx, input) {
      const c = connectorOf(input.connector);
      await validate(c, input);
      try {
        return await scope.withTenant(ctx.tenantId, async (trx) => {
          const conn = await repo.insertConnection(trx, {
            tenantId: ctx.tenantId,
            id: newId(),
            connector: c.name,
            name: input.name,
            config: input.config,
            credentialsCiphertext: seal(input.credentials),
            events: [...new Set(input.events)],
            active: input.active ?? true,
            createdBy: ctx.actor.userId ?? null,
          });
          await audit.record(trx, {
            orgId: ctx.tenantId,
            action: 'integrations.connection.created',
            target: { type: 'integration_connection', id: conn.id },
            changes: { connector: { to: c.name }, name: { to: conn.name }, events: { to: conn.events }, config: { to: conn.config } },
            context: auditContext(ctx),
          });
          return view(trx, ctx.tenantId, conn);
        });
      } catch (err) {
        if (isUniqueViolation(err)) throw nameTaken();
        throw err;
      }
    },

    async list(tenantId, q) {
      const fp = listFingerprint({ list: 'integration_connections' });
      const after = q.cursor ? (decodeCursor(q.cursor, fp, ID_POSITION)[1] as string) : undefined;
      const rows = await scope.withTenantRead(tenantId, async (trx) => {
        const found = await repo.listConnections(trx, tenantId, q.limit, after);
        return Promise.all(found.map((c) => view(trx, tenantId, c)));
      });
      return toPage(rows, q.limit, fp, (c) => [null, c.id]);
    },

    async get(tenantId, id) {
      return scope.withTenantRead(tenantId, async (trx) => view(trx, tenantId, await mustFind(trx, tenantId, id)));
    },

    async update(ctx, id, input) {
      const current = await scope.withTenantRead(ctx.tenantId, (trx) => mustFind(trx, ctx.tenantId, id));
      await validate(connectorOf(current.connector), input);
      try {
        return await scope.withTenant(ctx.tenantId, async (trx) => {
          await mustFind(trx, ctx.tenantId, id, true);
          const updated = (await repo.updateConnection(trx, ctx.tenantId, id, {
            name: input.name,
            config: input.config,
            events: input.events && [...new Set(input.events)],
            active: input.active,
            credentialsCiphertext: input.credentials && seal(input.credentials),
          }))!;
          const changes: Record<string, unknown> = {};
          for (const k of ['name', 'config', 'events', 'active'] as const) if (input[k] !== undefined) changes[k] = { from: current[k], to: updated[k] };
          if (input.credentials) changes.credentials = { to: '[rotated]' };
          await audit.record(trx, { orgId: ctx.tenantId, action: 'integrations.connection.updated', target: { type: 'integration_connection', id }, changes, context: auditContext(ctx) });
          return view(trx, ctx.tenantId, updated);
        });
      } catch (err) {
        if (isUniqueViolation(err)) throw nameTaken();
        throw err;
      }
    },

    async remove(ctx, id) {
      await scope.withTenant(ctx.tenantId, async (trx) => {
        if (!(await repo.deleteConnection(trx, ctx.tenantId, id))) throw connectionNotFound();
        await audit.record(trx, { orgId: ctx.tenantId, action: 'integrations.connection.deleted', target: { type: 'integration_connection', id }, context: auditContext(ctx) });
      });
    },

    async listDeliveries(tenantId, id, q) {
      const fp = listFingerprint({ list: 'integration_deliveries', id, status: q.status ?? null });
      const before = q.cursor ? (decodeCursor(q.cursor, fp, ID_POSITION)[1] as string) : undefined;
      const rows = await scope.withTenantRead(tenantId, async (trx) => {
        await mustFind(trx, tenantId, id);
        return repo.listDeliveries(trx, tenantId, id, q.status, q.limit, before);
      });
      return toPage(rows, q.limit, fp, (d) => [null, d.id]);
    },

    async replay(ctx, id, deliveryIds) {
      return scope.withTenant(ctx.tenantId, async (trx) => {
        await mustFind(trx, ctx.tenantId, id);
        const reopened = await repo.reopenDead(trx, ctx.tenantId, id, deliveryIds, REPLAY_LIMIT);
        for (const deliveryId of reopened) await requestDelivery(deps.events, trx, ctx.tenantId, { deliveryId, connectionId: id });
        await audit.record(trx, {
          orgId: ctx.tenantId,
          action: 'integrations.dead_letters.replayed',
          target: { type: 'integration_connection', id },
          changes: { replayed: { to: reopened.length } },
          context: auditContext(ctx),
        });
        return { replayed: reopened.length };
      });
    },

    async backfill(ctx, id, restart) {
      return scope.withTenant(ctx.tenantId, async (trx) => {
        const c = await mustFind(trx, ctx.tenantId, id, true);
        // Resumes from the stored cursor unless told to restart (or the previous one finished).
        const fresh = restart || c.backfillStatus === 'done' || c.backfillStatus === 'idle';
        await repo.setBackfill(trx, ctx.tenantId, id, { status: 'running', cursor: fresh ? null : c.backfillCursor, resetCount: fresh });
        await deps.events.add(trx, { name: BACKFILL_REQUESTED, tenantId: ctx.tenantId, payload: { connectionId: id } });
        await audit.record(trx, {
          orgId: ctx.tenantId,
          action: 'integrations.backfill.started',
          target: { type: 'integration_connection', id },
          changes: { resumed: { to: !fresh } },
          context: auditContext(ctx),
        });
        return view(trx, ctx.tenantId, (await repo.findConnection(trx, ctx.tenantId, id))!);
      });
    },
  };
}
