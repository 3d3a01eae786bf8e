import type { Logger } from 'pino';
import type { DbScope } from '../../platform/db/database.ts';
import { systemActor } from '../../platform/http/actor.ts';
import { newId } from '../../platform/ids.ts';
import type { EventEnvelope, EventPublisher } from '../../platform/outbox/publisher.ts';
import type { DestinationPolicy } from '../../platform/resilience/policy.ts';
import type { Audit } from '../audit/index.ts';
import { decryptSecret } from './notifications.crypto.ts';
import { DELIVERY_REQUESTED, type DeliveryRequestedPayload } from './notifications.events.ts';
import * as repo from './notifications.repo.ts';
import type { NotificationsTables, Trx } from './notifications.repo.ts';
import { sendWebhook, type SendResult } from './notifications.send.ts';
import type { UrlPolicy } from '../../platform/net/url-policy.ts';

export interface DeliveryDeps {
  scope: DbScope<NotificationsTables>;
  events: EventPublisher;
  audit: Audit;
  logger: Logger;
  /** platform.policies.webhook: a breaker per destination, concurrency capped per org and per process. */
  policy: DestinationPolicy;
  secretKey: Buffer;
  urlPolicy: UrlPolicy;
  timeoutMs: number;
  disableAfter: number;
}

/** What one delivery attempt concluded, for the job handler: done, or worth another attempt later. */
export type AttemptOutcome = { retry: false; result?: SendResult } | { retry: true; result: SendResult };

/** The sending side of webhooks, used by the module's job handlers (notifications.jobs.ts). */
export interface WebhookDelivery {
  /**
   * Fan-out, in the event handler's transaction: one delivery row (and one delivery request) per active
   * endpoint of the tenant subscribed to the event. A replayed event inserts nothing (unique per endpoint+event).
   */
  fanOut(trx: Trx, event: EventEnvelope): Promise<string[]>;
  /**
   * One attempt of one delivery, in `trx` (the job handler's transaction). Success and permanent failures
   * are recorded in `trx`. A transient failure is recorded in its own transaction (the handler's rolls back
   * so the jobs layer retries it), as `dead` on the last attempt.
   */
  attempt(trx: Trx, tenantId: string, deliveryId: string, attempt: { number: number; max: number }): Promise<AttemptOutcome>;
}

const SYSTEM = systemActor('notifications');

/** Asks the sender (consumer of DELIVERY_REQUESTED) to attempt a delivery, in the caller's transaction. */
export async function requestDelivery(events: EventPublisher, trx: Trx, tenantId: string, deliveryId: string): Promise<void> {
  const payload: DeliveryRequestedPayload = { deliveryId };
  await events.add(trx, { name: DELIVERY_REQUESTED, tenantId, payload });
}

export function createWebhookDelivery(deps: DeliveryDeps): WebhookDelivery {
  const { scope, audit } = deps;
  const log = deps.logger.child({ module: 'notifications' });

  /** A delivery finally failed (permanent error or attempts exhausted): count it, maybe disable the endpoint. */
  async function finalFailure(trx: Trx, tenantId: string, webhookId: string): Promise<void> {
    const disabled = await repo.countFailure(trx, tenantId, webhookId, deps.disableAfter);
    if (disabled) {
      await audit.record(trx, {
        orgId: tenantId,
        action: 'notifications.webhook.auto_disabled',
        target: { type: 'webhook', id: webhookId },
        changes: { active: { from: true, to: false }, consecutiveFailures: { to: deps.disableAfter } },
        context: SYSTEM,
      });
      log.warn({ tenantId, webhookId, failures: deps.disableAfter }, 'webhook endpoint disabled after consecutive failed deliveries');
    }
  }

  return {
    async fanOut(trx, event) {
      const tenantId = event.tenantId;
      if (!tenantId) return [];
      const endpoints = await repo.subscribedEndpoints(trx, tenantId, event.name);
      const body = JSON.stringify({ id: event.id, type: event.name, occurredAt: event.occurredAt, orgId: tenantId, data: event.payload });
      const ids = await repo.insertDeliveries(
        trx,
        endpoints.map((webhookId) => ({ tenantId, id: newId(), webhookId, eventId: event.id, eventType: event.name, body })),
      );
      for (const id of ids) await requestDelivery(deps.events, trx, tenantId, id);
      return ids;
    },

    async attempt(trx, tenantId, deliveryId, attempt) {
      const d = await repo.findDelivery(trx, tenantId, deliveryId);
      if (!d || d.status === 'succeeded') return { retry: false };
      const endpoint = await repo.endpointForSending(trx, tenantId, d.webhookId);
      if (!endpoint) return { retry: false };
      if (!endpoint.active) {
        await repo.recordAttempt(trx, tenantId, deliveryId, { status: 'failed', statusCode: null, errorKind: 'endpoint_disabled', durationMs: 0 });
        return { retry: false };
      }
      const result = await sendWebhook(
        { url: endpoint.url, id: d.eventId, body: d.body, secret: decryptSecret(endpoint.secretCiphertext, deps.secretKey), tenantId },
        { policy: deps.policy, timeoutMs: deps.timeoutMs, urlPolicy: deps.urlPolicy },
      );
      const attemptLog = { tenantId, webhookId: d.webhookId, deliveryId, eventId: d.eventId, attempt: attempt.number, statusCode: result.statusCode, errorKind: result.errorKind, durationMs: result.durationMs };
      const record = { statusCode: result.statusCode, errorKind: result.errorKind, durationMs: result.durationMs };
      if (result.ok) {
        await repo.recordAttempt(trx, tenantId, deliveryId, { status: 'succeeded', ...record });
        await repo.resetFailures(trx, tenantId, d.webhookId);
        log.info(attemptLog, 'webhook delivered');
        return { retry: false, result };
      }
      if (!result.transient) {
        await repo.recordAttempt(trx, tenantId, deliveryId, { status: 'failed', ...record });
        await finalFailure(trx, tenantId, d.webhookId);
        log.warn(attemptLog, 'webhook delivery failed permanently; not retried');
        return { retry: false, result };
      }
      const last = attempt.number >= attempt.max;
      // Not awaited: on the embedded single connection it runs once the handler's transaction has rolled back.
      void scope
        .withTenant(tenantId, async (t) => {
          await repo.recordAttempt(t, tenantId, deliveryId, { status: last ? 'dead' : 'pending', ...record });
          if (last) await finalFailure(t, tenantId, d.webhookId);
        })
        .catch((err) => log.error({ ...attemptLog, error: (err as Error).message }, 'could not record a webhook attempt'));
      log.warn({ ...attemptLog, last }, last ? 'webhook delivery failed for the last time; dead-lettered' : 'webhook delivery failed; will retry');
      return { retry: true, result };
    },
  };
}
