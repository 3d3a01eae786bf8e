import type { Transaction } from 'kysely';
import type { Logger } from 'pino';
import type { Database } from '../../platform/db/database.ts';
import { decodeCursor, listFingerprint, toPage } from '../../platform/http/pagination.ts';
import { isUuid, newId } from '../../platform/ids.ts';
import type { DestinationPolicy } from '../../platform/resilience/policy.ts';
import type { Audit, AuditContext } from '../audit/index.ts';
import { DELIVERY_REQUESTED, type DeliveryRequestedPayload } from './notifications.events.ts';
import { deliveryInFlight, deliveryNotFound, deliveryUnavailable, invalidUrl, webhookNotFound } from './notifications.errors.ts';
import { decryptSecret, encryptSecret, newSigningSecret } from './webhooks.crypto.ts';
import { webhooksRepo as repo, type Delivery, type Webhook } from './webhooks.repo.ts';
import { sendWebhook, type SendResult } from './webhooks.send.ts';
import { resolveProblem, urlProblem, type UrlPolicy } from './webhooks.url.ts';

type Trx = Transaction<any>;

/** The async backbone's `add` (platform.events): events commit with the caller's transaction. */
export interface OutboxPort {
  add(trx: Trx, event: { name: string; tenantId: string; payload: object }): Promise<unknown>;
}

/** A domain event as the webhook fan-out sees it (the outbox envelope). */
export interface DomainEvent {
  id: string;
  name: string;
  tenantId: string | null;
  occurredAt: string;
  payload: unknown;
}

export interface WebhooksDeps {
  db: Database;
  audit: Audit;
  logger: Logger;
  /** platform.policies.webhook: a breaker per destination, concurrency capped per org and per process. */
  policy: DestinationPolicy;
  /** Where delivery requests go; absent = deliveries are recorded but only sent by calling deliver() directly. */
  outbox?: OutboxPort;
  secretKey: Buffer;
  urlPolicy: UrlPolicy;
  timeoutMs: number;
  disableAfter: number;
}

export interface CreateWebhookInput {
  url: string;
  events: string[];
  description?: string;
  active?: boolean;
}

export type UpdateWebhookInput = Partial<CreateWebhookInput>;

export interface ActorContext extends AuditContext {
  tenantId: string;
}

const SYSTEM: AuditContext = { actor: { type: 'system', id: 'notifications', userId: null } };
const ID_POSITION = (k: [unknown, unknown]) => typeof k[1] === 'string' && isUuid(k[1]);

/** What one delivery attempt concluded, for the job handler: done, or worth another attempt later. */
export type AttemptOutcome = { retry: false; result?: SendResult } | { retry: true; result: SendResult };

export function createWebhooksService(deps: WebhooksDeps) {
  const { db, audit, logger } = deps;
  const log = logger.child({ module: 'notifications' });

  async function checkUrl(url: string): Promise<void> {
    const problem = urlProblem(url, deps.urlPolicy) ?? (await resolveProblem(url, deps.urlPolicy));
    if (problem) throw invalidUrl(problem);
  }

  async function mustFind(trx: Trx, tenantId: string, id: string, lock = false): Promise<Webhook> {
    const w = await repo.find(trx, tenantId, id, lock);
    if (!w) throw webhookNotFound();
    return w;
  }

  async function requestDelivery(trx: Trx, tenantId: string, deliveryId: string): Promise<void> {
    const payload: DeliveryRequestedPayload = { deliveryId };
    await deps.outbox?.add(trx, { name: DELIVERY_REQUESTED, tenantId, payload });
  }

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
    async create(ctx: ActorContext, input: CreateWebhookInput): Promise<{ webhook: Webhook; secret: string }> {
      await checkUrl(input.url);
      const secret = newSigningSecret();
      const webhook = await db.withTenant(ctx.tenantId, async (trx) => {
        const w = await repo.insert(trx, {
          tenant_id: ctx.tenantId,
          id: newId(),
          url: input.url,
          description: input.description ?? '',
          events: [...new Set(input.events)],
          active: input.active ?? true,
          secret_ciphertext: encryptSecret(secret, deps.secretKey),
          created_by: ctx.actor.userId ?? null,
        });
        await audit.record(trx, {
          orgId: ctx.tenantId,
          action: 'notifications.webhook.created',
          target: { type: 'webhook', id: w.id },
          changes: { url: { to: w.url }, events: { to: w.events }, active: { to: w.active } },
          context: ctx,
        });
        return w;
      });
      return { webhook, secret };
    },

    async list(tenantId: string, q: { limit: number; cursor?: string }) {
      const fp = listFingerprint({ list: 'webhooks' });
      const after = q.cursor ? (decodeCursor(q.cursor, fp, ID_POSITION)[1] as string) : undefined;
      const rows = await db.withTenantRead(tenantId, (trx) => repo.list(trx, tenantId, q.limit, after));
      return toPage(rows, q.limit, fp, (w) => [null, w.id]);
    },

    async get(tenantId: string, id: string): Promise<Webhook> {
      return db.withTenantRead(tenantId, (trx) => mustFind(trx, tenantId, id));
    },

    async update(ctx: ActorContext, id: string, input: UpdateWebhookInput): Promise<Webhook> {
      if (input.url !== undefined) {
        // Another org's (or an unknown) id is a 404 whatever the body; DNS is resolved outside the transaction.
        await db.withTenantRead(ctx.tenantId, (trx) => mustFind(trx, ctx.tenantId, id));
        await checkUrl(input.url);
      }
      return db.withTenant(ctx.tenantId, async (trx) => {
        const current = await mustFind(trx, ctx.tenantId, id, true);
        const set: Record<string, unknown> = {};
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
          if (input.active) Object.assign(set, { consecutive_failures: 0, disabled_reason: null });
        }
        if (Object.keys(set).length === 0) return current;
        const updated = (await repo.update(trx, ctx.tenantId, id, set))!;
        await audit.record(trx, { orgId: ctx.tenantId, action: 'notifications.webhook.updated', target: { type: 'webhook', id }, changes, context: ctx });
        return updated;
      });
    },

    async remove(ctx: ActorContext, id: string): Promise<void> {
      await db.withTenant(ctx.tenantId, async (trx) => {
        if (!(await repo.remove(trx, ctx.tenantId, id))) throw webhookNotFound();
        await audit.record(trx, { orgId: ctx.tenantId, action: 'notifications.webhook.deleted', target: { type: 'webhook', id }, context: ctx });
      });
    },

    async listDeliveries(tenantId: string, webhookId: string, q: { limit: number; cursor?: string }) {
      const fp = listFingerprint({ list: 'webhook_deliveries', webhookId });
      const before = q.cursor ? (decodeCursor(q.cursor, fp, ID_POSITION)[1] as string) : undefined;
      const rows = await db.withTenantRead(tenantId, async (trx) => {
        await mustFind(trx, tenantId, webhookId);
        return repo.listDeliveries(trx, tenantId, webhookId, q.limit, before);
      });
      return toPage(rows, q.limit, fp, (d) => [null, d.id]);
    },

    /** Sends a delivery again (same Webhook-Id, same body) as a new durable job. */
    async redeliver(ctx: ActorContext, webhookId: string, deliveryId: string): Promise<Delivery> {
      return db.withTenant(ctx.tenantId, async (trx) => {
        await mustFind(trx, ctx.tenantId, webhookId);
        const d = await repo.findDelivery(trx, ctx.tenantId, deliveryId);
        if (!d || d.webhookId !== webhookId) throw deliveryNotFound();
        if (!deps.outbox) throw deliveryUnavailable();
        if (d.status === 'pending') throw deliveryInFlight();
        const reopened = (await repo.reopenDelivery(trx, ctx.tenantId, deliveryId))!;
        await requestDelivery(trx, ctx.tenantId, deliveryId);
        await audit.record(trx, {
          orgId: ctx.tenantId,
          action: 'notifications.webhook.redelivered',
          target: { type: 'webhook_delivery', id: deliveryId },
          changes: { status: { from: d.status, to: 'pending' } },
          context: ctx,
        });
        return reopened;
      });
    },

    /**
     * Fan-out, in the event handler's transaction: one delivery row (and one delivery request) per active
     * endpoint of the tenant subscribed to the event. A replayed event inserts nothing (unique per endpoint+event).
     */
    async fanOut(trx: Trx, event: DomainEvent): Promise<string[]> {
      const tenantId = event.tenantId;
      if (!tenantId) return [];
      const endpoints = await repo.subscribers(trx, tenantId, event.name);
      const body = JSON.stringify({ id: event.id, type: event.name, occurredAt: event.occurredAt, orgId: tenantId, data: event.payload });
      const ids = await repo.insertDeliveries(
        trx,
        endpoints.map((webhookId) => ({ tenant_id: tenantId, id: newId(), webhook_id: webhookId, event_id: event.id, event_type: event.name, body })),
      );
      for (const id of ids) await requestDelivery(trx, tenantId, id);
      return ids;
    },

    /**
     * One attempt of one delivery, in `trx` (the job handler's transaction, or a fresh one). Success and
     * permanent failures are recorded in `trx`. A transient failure is recorded in its own transaction (the
     * handler's rolls back so the jobs layer retries it), as `dead` on the last attempt.
     */
    async attempt(trx: Trx, tenantId: string, deliveryId: string, attempt: { number: number; max: number }): Promise<AttemptOutcome> {
      const d = await repo.findDelivery(trx, tenantId, deliveryId);
      if (!d || d.status === 'succeeded') return { retry: false };
      const endpoint = await repo.secretOf(trx, tenantId, d.webhookId);
      if (!endpoint) return { retry: false };
      if (!endpoint.active) {
        await repo.recordAttempt(trx, tenantId, deliveryId, { status: 'failed', statusCode: null, errorKind: 'endpoint_disabled', durationMs: 0 });
        return { retry: false };
      }
      const result = await sendWebhook(
        { url: endpoint.url, id: d.eventId, body: d.body, secret: decryptSecret(endpoint.secret_ciphertext, deps.secretKey), tenantId },
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
      void db
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

export type WebhooksService = ReturnType<typeof createWebhooksService>;
