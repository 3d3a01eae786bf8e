import type { Transaction } from 'kysely';
import type { Logger } from 'pino';
import type { Mailer } from './mailer.ts';
import { DELIVERY_REQUESTED, INVITATION_CREATED, WEBHOOK_EVENT_TYPES, type DeliveryRequestedPayload } from './notifications.events.ts';
import type { DomainEvent, OutboxPort, WebhooksService } from './webhooks.service.ts';

/** The part of platform.events (src/platform/jobs/event-bus.ts) this module uses. */
export interface EventsPort extends OutboxPort {
  subscribe<P>(
    eventName: string,
    consumer: string,
    handler: (event: DomainEvent & { payload: P }, ctx: { trx: Transaction<any>; logger: Logger; attempt: number }) => Promise<void>,
    opts?: { maxAttempts?: number; backoffBaseMs?: number; backoffMaxMs?: number },
  ): void;
  consumers(): string[];
}

export interface InvitationCreatedPayload {
  invitationId: string;
  email: string;
  role: string;
  token: string;
  expiresAt: string;
}

export interface NotificationsJobsDeps {
  events: EventsPort;
  webhooks: WebhooksService;
  mailer: Mailer;
  publicUrl: string;
  maxAttempts: number;
  backoffBaseMs: number;
  backoffMaxMs: number;
}

/** Thrown so the jobs layer retries (with backoff) and finally dead-letters the delivery. */
export class WebhookAttemptError extends Error {
  override name = 'WebhookAttemptError';
}

const SENDER = 'notifications.webhook_sender';

export function registerNotificationsJobs(deps: NotificationsJobsDeps): void {
  const { events, webhooks } = deps;
  // A second composition on the same bus (another API instance in one process, as tests build) reuses the
  // handlers already subscribed: consumer names are unique per bus, and any instance's service is equivalent.
  if (events.consumers().includes(SENDER)) return;

  // Fan-out: one consumer per event type, each writing delivery rows + requests in its transaction.
  for (const type of WEBHOOK_EVENT_TYPES) {
    events.subscribe(type, `notifications.webhooks.${type}`, async (event, { trx }) => {
      await webhooks.fanOut(trx, event);
    });
  }

  // Delivery: one job per (endpoint, event) or redelivery; transient failures are retried durably.
  events.subscribe<DeliveryRequestedPayload>(
    DELIVERY_REQUESTED,
    SENDER,
    async (event, { trx, attempt }) => {
      if (!event.tenantId) return;
      const outcome = await webhooks.attempt(trx, event.tenantId, event.payload.deliveryId, { number: attempt, max: deps.maxAttempts });
      if (outcome.retry) {
        const r = outcome.result;
        throw new WebhookAttemptError(`webhook delivery failed: ${r.errorKind}${r.statusCode ? ` ${r.statusCode}` : ''}`);
      }
    },
    { maxAttempts: deps.maxAttempts, backoffBaseMs: deps.backoffBaseMs, backoffMaxMs: deps.backoffMaxMs },
  );

  // E-mail the invitee the accept link. A retried send carries the same Message-ID (the event id).
  events.subscribe<InvitationCreatedPayload>(
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
