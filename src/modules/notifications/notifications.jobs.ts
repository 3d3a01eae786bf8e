import type { DbScope } from '../../platform/db/database.ts';
import type { JobRegistry } from '../../platform/outbox/registry.ts';
import type { Mailer } from './notifications.mailer.ts';
import type { WebhookDelivery } from './notifications.delivery.ts';
import { DELIVERY_REQUESTED, INVITATION_CREATED, WEBHOOK_EVENT_TYPES, type DeliveryRequestedPayload } from './notifications.events.ts';
import type { NotificationsTables } from './notifications.repo.ts';
import type { InvitationCreatedPayload } from '../tenancy/index.ts';

export interface NotificationsJobsDeps {
  delivery: WebhookDelivery;
  mailer: Mailer;
  /** The module's tables: `scope.join(ctx.trx)` types a handler's transaction with them. */
  scope: DbScope<NotificationsTables>;
  publicUrl: string;
  maxAttempts: number;
  backoffBaseMs: number;
  backoffMaxMs: number;
}

/** Thrown so the jobs layer retries (with backoff) and finally dead-letters the delivery. */
export class WebhookAttemptError extends Error {
  override name = 'WebhookAttemptError';
}

export const SENDER = 'notifications.webhook_sender';

/** Subscribes the module's handlers: webhook fan-out per event type, the sender, the invitation e-mail. */
export function registerNotificationsJobs(jobs: JobRegistry, deps: NotificationsJobsDeps): void {
  const { delivery } = deps;

  // Fan-out: one consumer per event type, each writing delivery rows + requests in its transaction (its only
  // effects: batch-safe, so a batch of events shares one transaction without a savepoint per event).
  for (const type of WEBHOOK_EVENT_TYPES) {
    jobs.subscribe(
      type,
      `notifications.webhooks.${type}`,
      async (event, { trx }) => {
        await delivery.fanOut(deps.scope.join(trx), event);
      },
      // Billing events' webhooks may wait while an invoice run has the worker (`background`; see billing.jobs.ts).
      { batchSafe: true, background: type.startsWith('billing.') },
    );
  }

  // Delivery: one job per (endpoint, event) or redelivery; transient failures are retried durably.
  jobs.subscribe<DeliveryRequestedPayload>(
    DELIVERY_REQUESTED,
    SENDER,
    async (event, { trx, attempt }) => {
      if (!event.tenantId) return;
      const outcome = await delivery.attempt(deps.scope.join(trx), event.tenantId, event.payload.deliveryId, { number: attempt, max: deps.maxAttempts });
      if (outcome.retry) {
        const r = outcome.result;
        throw new WebhookAttemptError(`webhook delivery failed: ${r.errorKind}${r.statusCode ? ` ${r.statusCode}` : ''}`);
      }
    },
    { maxAttempts: deps.maxAttempts, backoffBaseMs: deps.backoffBaseMs, backoffMaxMs: deps.backoffMaxMs },
  );

  // E-mail the invitee the accept link. A retried send carries the same Message-ID (the event id).
  jobs.subscribe<InvitationCreatedPayload>(
    INVITATION_CREATED,
    'notifications.invitation_email',
    async (event) => {
      const link = `${deps.publicUrl}/invitations/${encodeURIComponent(event.payload.token)}`;
      await deps.mailer.send({
        to: event.payload.email,
        subject: 'You have been invited to an organization on Plinth',
        text: [
          `You have been invited to join an organization on Plinth as ${event.payload.role}.`,
          '',
          `Accept the invitation (sign in first, then open the link): ${link}`,
          `It expires at ${event.payload.expiresAt}.`,
          '',
          'If you were not expecting this, ignore this e-mail.',
        ].join('\n'),
        messageId: event.id,
        tenantId: event.tenantId,
      });
    },
    { maxAttempts: 8, backoffBaseMs: 10_000, backoffMaxMs: 3_600_000 },
  );
}
