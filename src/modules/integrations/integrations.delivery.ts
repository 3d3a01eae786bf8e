import type { Logger } from 'pino';
import { createSecretBox } from '../../platform/crypto/secret-box.ts';
import { CREDENTIALS_PURPOSE, redactPayload } from './integrations.connector.ts';
import type { DbScope } from '../../platform/db/database.ts';
import { newId } from '../../platform/ids.ts';
import type { EventEnvelope, EventPublisher } from '../../platform/outbox/publisher.ts';
import {
  BrokenCircuitError,
  BulkheadRejectedError,
  createDestinationPolicy,
  isTransientError,
  type DestinationPolicy,
} from '../../platform/resilience/policy.ts';
import type { AnyConnector, ConnectorEvent, PeopleLookup } from './integrations.connector.ts';
import { DELIVERY_REQUESTED, type DeliveryRequestedPayload } from './integrations.events.ts';
import { integrationCalls, integrationDeliveries, integrationLastSuccess } from './integrations.metrics.ts';
import * as repo from './integrations.repo.ts';
import type { IntegrationsTables, Trx } from './integrations.repo.ts';
import type { UrlPolicy } from '../../platform/net/url-policy.ts';

/** Per connector: breaker per connection (= per tenant), concurrency capped per tenant and per process. */
export const CONNECTOR_LIMITS = {
  timeoutMs: 10_000,
  breaker: { threshold: 5, halfOpenAfterMs: 30_000 },
  perConnection: { limit: 1, queue: 4 }, // one batch in flight per connection (its row lock; see lockConnection)
  perTenantLimit: 4,
  global: { limit: 32, queue: 256 },
  maxDestinations: 10_000,
};

export interface DeliveryDeps {
  scope: DbScope<IntegrationsTables>;
  events: EventPublisher;
  logger: Logger;
  connectors: ReadonlyMap<string, AnyConnector>;
  secretKey: Buffer;
  urlRules: UrlPolicy;
  people: PeopleLookup;
  limits?: Partial<typeof CONNECTOR_LIMITS>;
}

export type AttemptOutcome = { retry: false; error?: string } | { retry: true; error: string };

export interface IntegrationDelivery {
  /** In the event handler's transaction: one delivery row + request per subscribed active connection. */
  fanOut(trx: Trx, event: Pick<EventEnvelope, 'id' | 'name' | 'tenantId' | 'occurredAt' | 'payload'>, only?: string): Promise<string[]>;
  /** One attempt: the connection's oldest pending deliveries (up to maxBatch, normally including this one) in one vendor call. */
  attempt(trx: Trx, tenantId: string, req: DeliveryRequestedPayload, attempt: { number: number; max: number }): Promise<AttemptOutcome>;
  /** The connection's breaker: closed, open, half-open. */
  breakerState(connector: string, connectionId: string): string;
}

/** Thrown so the jobs layer retries the delivery (with backoff) and finally dead-letters it. */
export class IntegrationAttemptError extends Error {
  override name = 'IntegrationAttemptError';
}

/** Broken credentials (401/403) count against the breaker too: a tenant's bad key stops being hammered. */
const countsAgainstBreaker = (err: unknown) => {
  const status = statusOf(err);
  return isTransientError(err) || status === 401 || status === 403;
};

function statusOf(err: unknown): number | undefined {
  const e = err as { status?: unknown; statusCode?: unknown } | null;
  const s = typeof e?.status === 'number' ? e.status : typeof e?.statusCode === 'number' ? e.statusCode : undefined;
  return s;
}

function classify(err: unknown): { transient: boolean; status: number | null; retryAfterMs?: number; message: string } {
  const status = statusOf(err) ?? null;
  const retryAfter = (err as { retryAfterMs?: unknown } | null)?.retryAfterMs;
  const message = err instanceof BrokenCircuitError ? 'circuit open' : err instanceof BulkheadRejectedError ? 'concurrency limit reached' : String((err as Error)?.message ?? err);
  const transient = err instanceof BrokenCircuitError || err instanceof BulkheadRejectedError || isTransientError(err);
  return { transient, status, retryAfterMs: typeof retryAfter === 'number' && retryAfter > 0 ? retryAfter : undefined, message: message.slice(0, 1000) };
}

export function requestDelivery(events: EventPublisher, trx: Trx, tenantId: string, payload: DeliveryRequestedPayload) {
  return events.add(trx, { name: DELIVERY_REQUESTED, tenantId, payload });
}

export function createIntegrationDelivery(deps: DeliveryDeps): IntegrationDelivery {
  const { scope } = deps;
  const log = deps.logger.child({ module: 'integrations' });
  const limits = { ...CONNECTOR_LIMITS, ...deps.limits };
  const policies = new Map<string, DestinationPolicy>();
  /** Connection id → epoch ms before which the vendor asked not to be called (Retry-After). Per process. */
  const pausedUntil = new Map<string, number>();

  const policyFor = (connector: string) => {
    let p = policies.get(connector);
    if (!p) {
      p = createDestinationPolicy({
        name: `integration_${connector}`,
        timeoutMs: limits.timeoutMs,
        retries: 0, // durable retries are the jobs layer's (backoff, dead letters)
        breaker: limits.breaker,
        bulkhead: limits.perConnection,
        perTenantLimit: limits.perTenantLimit,
        global: limits.global,
        maxDestinations: limits.maxDestinations,
        isTransient: countsAgainstBreaker,
        logger: log,
      });
      policies.set(connector, p);
    }
    return p;
  };
  const destination = (connector: string, connectionId: string) => `${connector}:${connectionId}`;

  return {
    async fanOut(trx, event, only) {
      const tenantId = event.tenantId;
      if (!tenantId) return [];
      const subscribed = await repo.subscribedConnections(trx, tenantId, event.name);
      const targets = only ? subscribed.filter((id) => id === only) : subscribed;
      const envelope: ConnectorEvent = { id: event.id, name: event.name, tenantId, occurredAt: event.occurredAt, payload: redactPayload((event.payload ?? {}) as Record<string, unknown>) };
      const rows = targets.map((connectionId) => ({ tenantId, id: newId(), connectionId, eventId: event.id, eventName: event.name, event: envelope }));
      const ids = await repo.insertDeliveries(trx, rows);
      for (const id of ids) {
        const row = rows.find((r) => r.id === id)!;
        await requestDelivery(deps.events, trx, tenantId, { deliveryId: id, connectionId: row.connectionId });
      }
      return ids;
    },

    async attempt(trx, tenantId, req, attempt) {
      const d = await repo.findDelivery(trx, tenantId, req.deliveryId);
      if (!d || d.status !== 'pending') return { retry: false };
      const conn = await repo.findConnection(trx, tenantId, d.connectionId);
      const connector = conn && deps.connectors.get(conn.connector);
      if (!conn || !connector || !conn.active) {
        const error = !conn ? 'connection deleted' : !connector ? `connector ${conn.connector} not available` : 'connection inactive';
        await repo.settle(trx, tenantId, [d.id], { status: 'dead', statusCode: null, error });
        return { retry: false, error };
      }
      const attemptLog = { tenantId, connector: conn.connector, connectionId: conn.id, deliveryId: d.id, attempt: attempt.number };
      /** deferred: no call was made (Retry-After not elapsed, or another batch in flight), so it never dead-letters. */
      const fail = async (error: string, statusCode: number | null, deferred = false): Promise<AttemptOutcome> => {
        const exhausted = attempt.number >= attempt.max;
        const last = exhausted && !deferred;
        integrationDeliveries.inc({ connector: conn.connector, outcome: last ? 'dead' : deferred ? 'deferred' : 'retry' });
        // Not awaited: on the embedded single connection it runs once the handler's transaction has rolled back.
        void scope
          .withTenant(tenantId, async (t) => {
            if (deferred) {
              // The jobs layer gives up on this request; a fresh one keeps waiting for the vendor's window.
              if (exhausted) await requestDelivery(deps.events, t, tenantId, req);
              return;
            }
            await repo.settle(t, tenantId, [d.id], { status: last ? 'dead' : 'pending', statusCode, error });
            await repo.recordHealth(t, tenantId, conn.id, error);
          })
          .catch((err) => log.error({ ...attemptLog, error: (err as Error).message }, 'could not record an integration attempt'));
        log.warn({ ...attemptLog, error, statusCode, last }, last ? 'integration delivery dead-lettered' : 'integration delivery failed; will retry');
        return { retry: true, error };
      };

      const until = pausedUntil.get(conn.id);
      if (until !== undefined && until > Date.now()) return fail(`vendor asked to wait (Retry-After) until ${new Date(until).toISOString()}`, 429, true);

      // One batch in flight per connection (ordered delivery); this request comes back for its delivery later.
      if (!(await repo.lockConnection(trx, tenantId, conn.id))) return fail('another batch of this connection is in flight', null, true);
      const batch = await repo.claimBatch(trx, tenantId, conn.id, connector.maxBatch);
      if (batch.length === 0) return { retry: false };
      const ids = batch.map((b) => b.id);
      const ciphertext = (await repo.credentialsOf(trx, tenantId, conn.id))!;
      const credentials = JSON.parse(createSecretBox(deps.secretKey, CREDENTIALS_PURPOSE).open(ciphertext)) as Record<string, unknown>;
      try {
        await policyFor(conn.connector).execute({ destination: destination(conn.connector, conn.id), tenantId }, (signal) =>
          connector.deliver(batch.map((b) => b.event as ConnectorEvent), conn.config as never, credentials as never, {
            tenantId,
            connectionId: conn.id,
            signal,
            urlRules: deps.urlRules,
            people: (userIds) => deps.people(trx, tenantId, userIds),
          }),
        );
      } catch (err) {
        const c = classify(err);
        integrationCalls.inc({ connector: conn.connector, result: c.transient ? 'transient_error' : 'permanent_error' });
        if (c.retryAfterMs) pausedUntil.set(conn.id, Date.now() + c.retryAfterMs);
        if (c.transient) return fail(c.message, c.status);
        // Permanent (bad request, bad credentials): every event of the batch is dead-lettered for replay once fixed.
        await repo.settle(trx, tenantId, ids, { status: 'dead', statusCode: c.status, error: c.message });
        await repo.recordHealth(trx, tenantId, conn.id, c.message);
        integrationDeliveries.inc({ connector: conn.connector, outcome: 'dead' }, ids.length);
        log.warn({ ...attemptLog, error: c.message, statusCode: c.status, batch: ids.length }, 'integration delivery failed permanently; dead-lettered');
        return { retry: false, error: c.message };
      }
      pausedUntil.delete(conn.id);
      await repo.settle(trx, tenantId, ids, { status: 'succeeded', statusCode: null, error: null });
      // Older deliveries filled the batch: this one still needs a request of its own.
      if (!ids.includes(d.id)) await requestDelivery(deps.events, trx, tenantId, req);
      await repo.recordHealth(trx, tenantId, conn.id, null);
      integrationCalls.inc({ connector: conn.connector, result: 'ok' });
      integrationDeliveries.inc({ connector: conn.connector, outcome: 'succeeded' }, ids.length);
      integrationLastSuccess.set({ connector: conn.connector }, Date.now() / 1000);
      log.debug({ ...attemptLog, batch: ids.length }, 'integration delivery sent');
      return { retry: false };
    },

    breakerState: (connector, connectionId) => policies.get(connector)?.breakerState(destination(connector, connectionId)) ?? 'closed',
  };
}
