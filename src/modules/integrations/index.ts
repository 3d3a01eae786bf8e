import type { Logger } from 'pino';
import type { Database } from '../../platform/db/database.ts';
import { asPlugin } from '../../platform/http/module-routes.ts';
import type { ModuleSurface } from '../../platform/module.ts';
import type { EventPublisher } from '../../platform/outbox/publisher.ts';
import type { Audit } from '../audit/index.ts';
import { SHIPPED_CONNECTORS } from './connectors/index.ts';
import type { AnyConnector, PeopleLookup, Person } from './integrations.connector.ts';
import type { TxHandle } from '../../platform/db/database.ts';
import { createIntegrationDelivery, type CONNECTOR_LIMITS } from './integrations.delivery.ts';
import { createInbound } from './integrations.inbound.ts';
import { inboundRoutes } from './integrations.inbound.routes.ts';
import { registerIntegrationsJobs, type BackfillSource } from './integrations.jobs.ts';
import { integrationsScope } from './integrations.repo.ts';
import { integrationsRoutes } from './integrations.routes.ts';
import { createIntegrationsService, type IntegrationsService } from './integrations.service.ts';

export { ConnectorError, defineConnector, parseRetryAfter, type AnyConnector, type Connector, type ConnectorEvent, type DeliverContext, type PeopleLookup, type Person } from './integrations.connector.ts';
export { BILLING_SUBSCRIPTION_EVENTS, INBOUND_EVENT, PRODUCT_EVENTS, type InboundEventPayload } from './integrations.events.ts';
export { hubspotSignatureV3 } from './connectors/hubspot.ts';
export { INTEGRATIONS_MANAGE } from './integrations.routes.ts';
export { SHIPPED_CONNECTORS } from './connectors/index.ts';
export type { BackfillSource } from './integrations.jobs.ts';
export type { IntegrationsService, ConnectionView } from './integrations.service.ts';

export interface IntegrationsDeps {
  db: Database;
  events: EventPublisher;
  audit: Audit;
  logger: Logger;
  /** 32-byte key encrypting connection credentials at rest. */
  secretKey: Buffer;
  /** The public base URL vendors call (inbound webhook signatures cover the full URL). */
  publicUrl: string;
  /** Production: https and public addresses only (the webhook rules). */
  strictUrls: boolean;
  /** History for the backfill action (from the source modules' facades). */
  backfillSource: BackfillSource;
  /** Members' addresses at delivery time (the HubSpot contacts), from the identity/tenancy facades: `peopleFrom`. */
  people: PeopleLookup;
  /** Default SHIPPED_CONNECTORS; tests add fakes. */
  connectors?: readonly AnyConnector[];
  delivery?: { maxAttempts?: number; backoffBaseMs?: number; backoffMaxMs?: number; limits?: Partial<typeof CONNECTOR_LIMITS> };
}

export interface IntegrationsModule extends ModuleSurface {
  integrations: IntegrationsService;
}

/** Connectors fed by the outbox: connections per org, batched deliveries, breakers, dead letters, backfill. */
export function createIntegrations(deps: IntegrationsDeps): IntegrationsModule {
  const scope = integrationsScope(deps.db);
  const connectors = new Map((deps.connectors ?? SHIPPED_CONNECTORS).map((c) => [c.name, c]));
  const urlRules = { strict: deps.strictUrls };
  const delivery = createIntegrationDelivery({ scope, events: deps.events, logger: deps.logger, connectors, secretKey: deps.secretKey, urlRules, people: deps.people, limits: deps.delivery?.limits });
  const inbound = createInbound({ scope, events: deps.events, connectors, secretKey: deps.secretKey });
  const integrations = createIntegrationsService({ scope, events: deps.events, audit: deps.audit, connectors, delivery, secretKey: deps.secretKey, urlRules });
  return {
    name: 'integrations',
    integrations,
    routes: [
      { name: 'integrations', prefix: '/v1', plugin: asPlugin((app) => integrationsRoutes(app, { service: integrations })) },
      { name: 'integrations-inbound', prefix: '/v1', plugin: asPlugin((app) => inboundRoutes(app, { inbound, publicUrl: deps.publicUrl })) },
    ],
    registerJobs(jobs) {
      registerIntegrationsJobs(jobs, {
        scope,
        events: deps.events,
        delivery,
        inbound,
        connectors,
        backfillSource: deps.backfillSource,
        logger: deps.logger,
        maxAttempts: deps.delivery?.maxAttempts ?? 8,
        backoffBaseMs: deps.delivery?.backoffBaseMs ?? 5_000,
        backoffMaxMs: deps.delivery?.backoffMaxMs ?? 3_600_000,
      });
    },
  };
}

/** Backfill from the projects module's facade: every project of the org as `projects.project_created`. */
export function projectsBackfill(listProjects: (tenantId: string, q: { limit: number; cursor?: string }) => Promise<{ data: Array<{ id: string; key: string; name: string; createdBy: string; createdAt: Date }>; nextCursor: string | null }>): BackfillSource {
  return async (tenantId, cursor, limit) => {
    const page = await listProjects(tenantId, { limit, cursor: cursor ?? undefined });
    return {
      events: page.data.map((p) => ({
        id: p.id, // one delivery per project per connection, however often the backfill runs
        name: 'projects.project_created',
        occurredAt: p.createdAt.toISOString(),
        payload: { projectId: p.id, key: p.key, name: p.name, actorId: p.createdBy, backfill: true },
      })),
      nextCursor: page.nextCursor,
    };
  };
}

/** Backfill of the org itself, as one `tenancy.org_created` (its id is the event id: sent once per connection). */
export function orgBackfill(getOrg: (tenantId: string) => Promise<{ id: string; name: string; createdAt: Date }>): BackfillSource {
  return async (tenantId) => {
    const org = await getOrg(tenantId);
    return { events: [{ id: org.id, name: 'tenancy.org_created', occurredAt: org.createdAt.toISOString(), payload: { orgId: org.id, name: org.name, createdBy: null, signup: false, backfill: true } }], nextCursor: null };
  };
}

/** Backfill of the org's members as `tenancy.member_joined` (ids and role only: no address leaves the facade here). */
export function membersBackfill(listMembers: (tenantId: string, q: { limit: number; cursor?: string }) => Promise<{ data: Array<{ userId: string; role: string; joinedAt: Date }>; nextCursor: string | null }>): BackfillSource {
  return async (tenantId, cursor, limit) => {
    const page = await listMembers(tenantId, { limit, cursor: cursor ?? undefined });
    return {
      events: page.data.map((m) => ({
        id: m.userId, // one delivery per member per connection, however often the backfill runs
        name: 'tenancy.member_joined',
        occurredAt: m.joinedAt.toISOString(),
        payload: { userId: m.userId, role: m.role, via: 'backfill', actorId: null, backfill: true },
      })),
      nextCursor: page.nextCursor,
    };
  };
}

/**
 * Several backfill sources one after the other (the org, then its members, then its projects); the cursor
 * names the source it is in (`<source>|<its cursor>`), so a resumed backfill continues in the right one.
 */
export function chainBackfill(sources: Record<string, BackfillSource>): BackfillSource {
  const names = Object.keys(sources);
  return async (tenantId, cursor, limit) => {
    const sep = cursor?.indexOf('|') ?? -1;
    let i = cursor && sep > 0 ? Math.max(0, names.indexOf(cursor.slice(0, sep))) : 0;
    let inner: string | null = cursor && sep > 0 ? cursor.slice(sep + 1) || null : null;
    for (; i < names.length; i++, inner = null) {
      const page = await sources[names[i]!]!(tenantId, inner, limit);
      const next = page.nextCursor ? `${names[i]}|${page.nextCursor}` : i + 1 < names.length ? `${names[i + 1]}|` : null;
      if (page.events.length > 0 || !next) return { events: page.events, nextCursor: next };
    }
    return { events: [], nextCursor: null };
  };
}

/**
 * People for connectors, from the identity and tenancy facades, in the sender's transaction (inside the
 * tenant): a user identity no longer returns (deleted, erased) is left out, so nothing about them is sent.
 */
export function peopleFrom(facades: {
  getUsers: (ids: string[], trx: TxHandle) => Promise<Map<string, { email: string; name: string }>>;
  rolesIn: (trx: TxHandle, orgId: string, userIds: string[]) => Promise<Map<string, string>>;
}): PeopleLookup {
  return async (trx, tenantId, userIds) => {
    const ids = [...new Set(userIds)];
    const [users, roles] = await Promise.all([facades.getUsers(ids, trx), facades.rolesIn(trx, tenantId, ids)]);
    const out = new Map<string, Person>();
    for (const id of ids) {
      const u = users.get(id);
      if (u) out.set(id, { email: u.email, name: u.name, role: roles.get(id) ?? null });
    }
    return out;
  };
}
