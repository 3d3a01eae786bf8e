import type { DbScope } from '../../platform/db/database.ts';
import type { TenantActorContext } from '../../platform/http/actor.ts';
import { decodeCursor, listFingerprint, toPage, type KeysetPosition } from '../../platform/http/pagination.ts';
import { isUuid, newId } from '../../platform/ids.ts';
import type { EventPublisher } from '../../platform/outbox/publisher.ts';
import type { Audit } from '../audit/index.ts';
import { encryptSecret, newSigningSecret } from './notifications.crypto.ts';
import { requestDelivery } from './notifications.delivery.ts';
import { deliveryInFlight, deliveryNotFound, invalidUrl, webhookNotFound } from './notifications.errors.ts';
import * as repo from './notifications.repo.ts';
import type { Delivery, NotificationsTables, Trx, Webhook, WebhookChanges } from './notifications.repo.ts';
import { resolveProblem, urlProblem, type UrlPolicy } from '../../platform/net/url-policy.ts';

export interface WebhooksDeps {
  scope: DbScope<NotificationsTables>;
  events: EventPublisher;
  audit: Audit;
  secretKey: Buffer;
  urlPolicy: UrlPolicy;
}

export interface CreateWebhookInput {
  url: string;
  events: string[];
  description?: string;
  active?: boolean;
}

export type UpdateWebhookInput = Partial<CreateWebhookInput>;

/** A keyset page, as the platform's toPage makes it. */
export type Page<T> = ReturnType<typeof toPage<T>>;

/** Managing an org's webhook endpoints and their delivery log (the HTTP API's use cases). */
export interface WebhooksService {
  /** The signing secret is returned here only, never again. */
  create(ctx: TenantActorContext, input: CreateWebhookInput): Promise<{ webhook: Webhook; secret: string }>;
  list(tenantId: string, q: { limit: number; cursor?: string }): Promise<Page<Webhook>>;
  get(tenantId: string, id: string): Promise<Webhook>;
  /** `active: true` re-enables a disabled endpoint and resets its failure count. */
  update(ctx: TenantActorContext, id: string, input: UpdateWebhookInput): Promise<Webhook>;
  remove(ctx: TenantActorContext, id: string): Promise<void>;
  /** Newest first. */
  listDeliveries(tenantId: string, webhookId: string, q: { limit: number; cursor?: string }): Promise<Page<Delivery>>;
  /** Sends a delivery again (same Webhook-Id, same body) as a new durable job. */
  redeliver(ctx: TenantActorContext, webhookId: string, deliveryId: string): Promise<Delivery>;
}

const ID_POSITION = (k: KeysetPosition) => typeof k[1] === 'string' && isUuid(k[1]);

const auditContext = (ctx: TenantActorContext) => ({ actor: ctx.actor, requestId: ctx.requestId, ip: ctx.ip });

export function createWebhooksService(deps: WebhooksDeps): WebhooksService {
  const { scope, audit } = deps;

  async function checkUrl(url: string): Promise<void> {
    const problem = urlProblem(url, deps.urlPolicy) ?? (await resolveProblem(url, deps.urlPolicy));
    if (problem) throw invalidUrl(problem);
  }

  async function mustFind(trx: Trx, tenantId: string, id: string, lock = false): Promise<Webhook> {
    const w = await repo.findWebhook(trx, tenantId, id, lock);
    if (!w) throw webhookNotFound();
    return w;
  }

  return {
    async create(ctx, input) {
      await checkUrl(input.url);
      const secret = newSigningSecret();
      const webhook = await scope.withTenant(ctx.tenantId, async (trx) => {
        const w = await repo.insertWebhook(trx, {
          tenantId: ctx.tenantId,
          id: newId(),
          url: input.url,
          description: input.description ?? '',
          events: [...new Set(input.events)],
          active: input.active ?? true,
          secretCiphertext: encryptSecret(secret, deps.secretKey),
          createdBy: ctx.actor.userId ?? null,
        });
        await audit.record(trx, {
          orgId: ctx.tenantId,
          action: 'notifications.webhook.created',
          target: { type: 'webhook', id: w.id },
          changes: { url: { to: w.url }, events: { to: w.events }, active: { to: w.active } },
          context: auditContext(ctx),
        });
        return w;
      });
      return { webhook, secret };
    },

    async list(tenantId, q) {
      const fp = listFingerprint({ list: 'webhooks' });
      const after = q.cursor ? (decodeCursor(q.cursor, fp, ID_POSITION)[1] as string) : undefined;
      const rows = await scope.withTenantRead(tenantId, (trx) => repo.listWebhooks(trx, tenantId, q.limit, after));
      return toPage(rows, q.limit, fp, (w) => [null, w.id]);
    },

    async get(tenantId, id) {
      return scope.withTenantRead(tenantId, (trx) => mustFind(trx, tenantId, id));
    },

    async update(ctx, id, input) {
      if (input.url !== undefined) {
        // Another org's (or an unknown) id is a 404 whatever the body; DNS is resolved outside the transaction.
        await scope.withTenantRead(ctx.tenantId, (trx) => mustFind(trx, ctx.tenantId, id));
        await checkUrl(input.url);
      }
      return scope.withTenant(ctx.tenantId, async (trx) => {
        const current = await mustFind(trx, ctx.tenantId, id, true);
        const set: WebhookChanges = {};
        const changes: Record<string, unknown> = {};
        const events = input.events && [...new Set(input.events)];
        if (input.url !== undefined && input.url !== current.url) {
          set.url = input.url;
          changes.url = { from: current.url, to: input.url };
        }
        if (input.description !== undefined && input.description !== current.description) {
          set.description = input.description;
          changes.description = { from: current.description, to: input.description };
        }
        if (events && events.join() !== current.events.join()) {
          set.events = events;
          changes.events = { from: current.events, to: events };
        }
        if (input.active !== undefined && input.active !== current.active) {
          set.active = input.active;
          changes.active = { from: current.active, to: input.active };
          // Re-enabling is the operator saying the receiver is fixed: start counting afresh.
          if (input.active) set.resetFailures = true;
        }
        if (Object.keys(set).length === 0) return current;
        const updated = (await repo.updateWebhook(trx, ctx.tenantId, id, set))!;
        await audit.record(trx, { orgId: ctx.tenantId, action: 'notifications.webhook.updated', target: { type: 'webhook', id }, changes, context: auditContext(ctx) });
        return updated;
      });
    },

    async remove(ctx, id) {
      await scope.withTenant(ctx.tenantId, async (trx) => {
        if (!(await repo.deleteWebhook(trx, ctx.tenantId, id))) throw webhookNotFound();
        await audit.record(trx, { orgId: ctx.tenantId, action: 'notifications.webhook.deleted', target: { type: 'webhook', id }, context: auditContext(ctx) });
      });
    },

    async listDeliveries(tenantId, webhookId, q) {
      const fp = listFingerprint({ list: 'webhook_deliveries', webhookId });
      const before = q.cursor ? (decodeCursor(q.cursor, fp, ID_POSITION)[1] as string) : undefined;
      const rows = await scope.withTenantRead(tenantId, async (trx) => {
        await mustFind(trx, tenantId, webhookId);
        return repo.listDeliveries(trx, tenantId, webhookId, q.limit, before);
      });
      return toPage(rows, q.limit, fp, (d) => [null, d.id]);
    },

    async redeliver(ctx, webhookId, deliveryId) {
      return scope.withTenant(ctx.tenantId, async (trx) => {
        await mustFind(trx, ctx.tenantId, webhookId);
        const d = await repo.findDelivery(trx, ctx.tenantId, deliveryId);
        if (!d || d.webhookId !== webhookId) throw deliveryNotFound();
        if (d.status === 'pending') throw deliveryInFlight();
        const reopened = (await repo.reopenDelivery(trx, ctx.tenantId, deliveryId))!;
        await requestDelivery(deps.events, trx, ctx.tenantId, deliveryId);
        await audit.record(trx, {
          orgId: ctx.tenantId,
          action: 'notifications.webhook.redelivered',
          target: { type: 'webhook_delivery', id: deliveryId },
          changes: { status: { from: d.status, to: 'pending' } },
          context: auditContext(ctx),
        });
        return reopened;
      });
    },
  };
}
