import type { Logger } from 'pino';
import type { NotificationsConfig } from '../../platform/config.ts';
import type { Database } from '../../platform/db/database.ts';
import { asPlugin } from '../../platform/http/module-routes.ts';
import type { ModuleSurface } from '../../platform/module.ts';
import type { EventPublisher } from '../../platform/outbox/publisher.ts';
import type { OutboundPolicies } from '../../platform/resilience/policy.ts';
import type { Audit } from '../audit/index.ts';
import { createWebhookDelivery } from './notifications.delivery.ts';
import { registerNotificationsJobs } from './notifications.jobs.ts';
import type { Mailer } from './notifications.mailer.ts';
import { notificationsScope, orgsSubscribed } from './notifications.repo.ts';
import { notificationsRoutes } from './notifications.routes.ts';
import { createWebhooksService, type WebhooksService } from './notifications.service.ts';

export { WEBHOOK_EVENT_TYPES, DELIVERY_REQUESTED, type WebhookEventType } from './notifications.events.ts';
export { WEBHOOKS_MANAGE } from './notifications.routes.ts';
export { signPayload, verifySignature } from './notifications.crypto.ts';
export { createMailer, createMemoryMailer, createSmtpMailer, type Mail, type Mailer } from './notifications.mailer.ts';
export type { Webhook, Delivery } from './notifications.repo.ts';
export type { CreateWebhookInput, UpdateWebhookInput, WebhooksService } from './notifications.service.ts';

/** Everything the notifications module is given; all required (the composition wires each one). */
export interface NotificationsDeps {
  db: Database;
  /** platform.events: delivery requests commit with the change (or the handler) that causes them. */
  events: EventPublisher;
  audit: Audit;
  logger: Logger;
  /** config.notifications */
  config: NotificationsConfig;
  /** platform.policies.webhook: every outbound webhook call. */
  policies: Pick<OutboundPolicies, 'webhook'>;
  /** Where e-mail goes: `createMailer(...)` (SMTP when SMTP_URL is set, else memory), or a test's memory mailer. */
  mailer: Mailer;
}

/** The notifications facade: webhook endpoint management; deliveries and e-mail run in its job handlers. */
export interface NotificationsModule extends ModuleSurface {
  webhooks: WebhooksService;
  /** Of these orgs, the ones with an active endpoint subscribed to the event type, in one call (audit asks before each sequencer pass). */
  subscribedAmong(orgIds: string[], eventType: string): Promise<Set<string>>;
}

/** Webhook endpoints per org with signed, durable, retried deliveries; e-mail notifications (invitations). */
export function createNotifications(deps: NotificationsDeps): NotificationsModule {
  const n = deps.config;
  const scope = notificationsScope(deps.db);
  const urlPolicy = { strict: n.webhookStrictUrls };
  const webhooks = createWebhooksService({ scope, events: deps.events, audit: deps.audit, secretKey: n.webhookSecretKey, urlPolicy });
  const delivery = createWebhookDelivery({
    scope,
    events: deps.events,
    audit: deps.audit,
    logger: deps.logger,
    policy: deps.policies.webhook,
    secretKey: n.webhookSecretKey,
    urlPolicy,
    timeoutMs: n.webhookTimeoutMs,
    disableAfter: n.webhookDisableAfter,
  });
  return {
    name: 'notifications',
    webhooks,
    subscribedAmong: (orgIds, eventType) => orgsSubscribed(scope.app, orgIds, eventType),
    routes: [{ name: 'notifications', prefix: '/v1', plugin: asPlugin((app) => notificationsRoutes(app, { service: webhooks })) }],
    registerJobs(jobs) {
      registerNotificationsJobs(jobs, {
        scope,
        delivery,
        mailer: deps.mailer,
        publicUrl: n.publicUrl,
        maxAttempts: n.webhookMaxAttempts,
        backoffBaseMs: n.webhookBackoffBaseMs,
        backoffMaxMs: n.webhookBackoffMaxMs,
      });
    },
  };
}
