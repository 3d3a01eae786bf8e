import { asPlugin, type ModuleRoutes } from '../../platform/http/module-routes.ts';
import type { Config } from '../../platform/config.ts';
import type { Database } from '../../platform/db/database.ts';
import type { OutboundPolicies } from '../../platform/resilience/policy.ts';
import type { Logger } from 'pino';
import type { Audit } from '../audit/index.ts';
import { createMailer, type Mailer } from './mailer.ts';
import { registerNotificationsJobs, type EventsPort } from './notifications.jobs.ts';
import { webhooksRoutes } from './webhooks.routes.ts';
import { createWebhooksService, type WebhooksService } from './webhooks.service.ts';

export { WEBHOOK_EVENT_TYPES, DELIVERY_REQUESTED, type WebhookEventType } from './notifications.events.ts';
export { WEBHOOKS_MANAGE } from './webhooks.routes.ts';
export { signPayload, verifySignature } from './webhooks.crypto.ts';
export { createMemoryMailer, createSmtpMailer, type Mail, type Mailer } from './mailer.ts';
export type { EventsPort } from './notifications.jobs.ts';
export type { Webhook, Delivery } from './webhooks.repo.ts';
export type { WebhooksService } from './webhooks.service.ts';

export interface NotificationsDeps {
  db: Database;
  audit: Audit;
  logger: Logger;
  config: Config;
  policies: Pick<OutboundPolicies, 'webhook' | 'smtp'>;
  /** platform.events. Without it (a process with no event bus) endpoints are managed but nothing is sent. */
  events?: EventsPort;
  /** Replaces the mailer SMTP_URL selects (tests). */
  mailer?: Mailer;
}

export interface Notifications {
  webhooks: WebhooksService;
  mailer: Mailer;
  routes: ModuleRoutes;
}

/** Webhook endpoints per org with signed, durable, retried deliveries; e-mail notifications (invitations). */
export function createNotifications(deps: NotificationsDeps): Notifications {
  const n = deps.config.notifications;
  const mailer = deps.mailer ?? createMailer({ smtpUrl: n.smtpUrl, from: n.mailFrom, policy: deps.policies.smtp, logger: deps.logger });
  const webhooks = createWebhooksService({
    db: deps.db,
    audit: deps.audit,
    logger: deps.logger,
    policy: deps.policies.webhook,
    outbox: deps.events,
    secretKey: n.webhookSecretKey,
    urlPolicy: { strict: n.webhookStrictUrls },
    timeoutMs: n.webhookTimeoutMs,
    disableAfter: n.webhookDisableAfter,
  });
  if (deps.events) {
    registerNotificationsJobs({
      events: deps.events,
      webhooks,
      mailer,
      publicUrl: n.publicUrl,
      maxAttempts: n.webhookMaxAttempts,
      backoffBaseMs: n.webhookBackoffBaseMs,
      backoffMaxMs: n.webhookBackoffMaxMs,
    });
  }
  return { webhooks, mailer, routes: { name: 'notifications', prefix: '/v1', plugin: asPlugin((app) => webhooksRoutes(app, { service: webhooks })) } };
}
