import { createHmac } from 'node:crypto';
import type { Logger } from 'pino';
import Stripe from 'stripe';
import type { TxHandle } from '../../../platform/db/database.ts';
import { isUuid, newId } from '../../../platform/ids.ts';
import type { EventPublisher } from '../../../platform/outbox/publisher.ts';
import { gatewayNotConfigured, webhookBadSignature } from '../billing.errors.ts';
import { BILLING_EVENTS, type PaymentEventReceivedPayload } from '../billing.events.ts';
import type { GatewayFailureCode, GatewayName, GatewayPaymentStatus } from '../billing.gateway.ts';
import { stripeFailureCode } from '../billing.gateway-stripe.ts';
import { paymentWebhookEvents } from '../billing.payments-metrics.ts';
import * as repo from '../payment-events.repo.ts';
import type { PaymentEventRow, PaymentEventsScope } from '../payment-events.repo.ts';

/**
 * What the payment side of billing (invoices and payment attempts) offers to webhooks and reconciliation.
 * Declared here, implemented by the billing service (payment attempts), passed in at construction.
 *
 * `applyGatewayPaymentUpdate` looks the attempt up by `gatewayPaymentId` **inside `orgId`'s tenant
 * context** — an event naming another org's payment finds nothing — and must be idempotent and
 * monotonic: applying the same update twice, or an older state after a newer one (a failure after the
 * success), changes nothing. `trx`: the caller's transaction (the webhook job's, in the org's tenant
 * context); join it rather than open a second one — PGlite has one connection, and the effect must commit
 * with the inbox row's settlement. Reconciliation calls it without one.
 */
export interface PaymentUpdates {
  applyGatewayPaymentUpdate(orgId: string, update: GatewayPaymentUpdate, trx?: TxHandle): Promise<unknown>;
  /**
   * Attempts to compare with the gateway: those not settled for good plus those changed since `since`,
   * ordered by attemptId ascending, at most `limit`, after the keyset cursor `after` (an attemptId).
   */
  listPaymentAttemptsForReconciliation(q: { since: Date; limit: number; after?: string }): Promise<ReconciliationAttempt[]>;
}

export interface GatewayPaymentUpdate {
  gatewayPaymentId: string;
  status: GatewayPaymentStatus;
  failureCode?: GatewayFailureCode;
  /** Minor units, as at the gateway. */
  amount: number;
  /** As the gateway echoes it: `orgId`, `invoiceId`, `attemptId`. */
  metadata: Record<string, string>;
  /** Extras the receiver may use: refunded so far (charge.refunded), currency, which gateway, and who tells. */
  amountRefunded?: number;
  currency?: string;
  gateway?: GatewayName;
  source?: 'webhook' | 'reconciliation';
}

export interface ReconciliationAttempt {
  orgId: string;
  invoiceId: string;
  attemptId: string;
  gatewayPaymentId: string;
  status: string;
  amount: number;
  currency: string;
  /** Which gateway holds the payment; the configured default when absent. */
  gateway?: GatewayName;
}

/** The parts of a gateway event billing reads (Stripe's event shape; the sandbox sends the same shape). */
interface GatewayEvent {
  id: string;
  type: string;
  created: number;
  data: { object: Record<string, unknown> };
}

export type WebhookHeaders = Record<string, string | string[] | undefined>;

/** Verifies a delivery over the exact bytes received and returns the event; throws on a bad signature. */
export interface WebhookVerifier {
  verify(rawBody: string, headers: WebhookHeaders): GatewayEvent;
}

const header = (headers: WebhookHeaders, name: string) => {
  const v = headers[name];
  return Array.isArray(v) ? v[0] : v;
};

/**
 * Stripe's scheme, checked by Stripe's own library: `Stripe-Signature: t=<unix>,v1=<hex HMAC-SHA256 of
 * "<t>.<body>">`, the timestamp within `toleranceSec` of now (replays of an old delivery are refused).
 */
export function stripeWebhookVerifier(secret: string, toleranceSec: number, headerName = 'stripe-signature'): WebhookVerifier {
  return {
    verify(rawBody, headers) {
      const sig = header(headers, headerName);
      if (!sig) throw webhookBadSignature(`missing ${headerName} header`);
      try {
        return Stripe.webhooks.constructEvent(rawBody, sig, secret, toleranceSec) as unknown as GatewayEvent;
      } catch (err) {
        if (err instanceof Stripe.errors.StripeSignatureVerificationError) throw webhookBadSignature('signature invalid or outside the tolerance window');
        throw webhookBadSignature('body is not a JSON event');
      }
    },
  };
}

/**
 * The sandbox gateway signs its webhooks exactly as Stripe does (`Sandbox-Signature: t=…,v1=…`, HMAC-SHA256
 * of "<t>.<body>" with SANDBOX_WEBHOOK_SECRET), so one well-tested verifier checks both.
 */
export const sandboxWebhookVerifier = (secret: string, toleranceSec: number): WebhookVerifier => stripeWebhookVerifier(secret, toleranceSec, 'sandbox-signature');

/** The `Sandbox-Signature` header value for a body (what the sandbox gateway sends). */
export function signSandboxWebhook(body: string, secret: string, timestamp = Math.floor(Date.now() / 1000)): string {
  return `t=${timestamp},v1=${createHmac('sha256', secret).update(`${timestamp}.${body}`, 'utf8').digest('hex')}`;
}

interface Interpreted {
  /** The gateway payment the event is about. */
  objectId: string | null;
  orgId: string | null;
  update?: GatewayPaymentUpdate;
}

const INTENT_STATUS: Record<string, GatewayPaymentStatus> = {
  'payment_intent.succeeded': 'succeeded',
  'payment_intent.payment_failed': 'failed',
  'payment_intent.processing': 'processing',
  'payment_intent.requires_action': 'requires_action',
  'payment_intent.canceled': 'canceled',
};

const str = (v: unknown) => (typeof v === 'string' ? v : undefined);
const int = (v: unknown) => (typeof v === 'number' && Number.isInteger(v) ? v : undefined);
function stringMap(v: unknown): Record<string, string> {
  if (!v || typeof v !== 'object') return {};
  return Object.fromEntries(Object.entries(v as Record<string, unknown>).filter((e): e is [string, string] => typeof e[1] === 'string'));
}

/** A gateway event → the payment update it stands for (none for types billing does not act on). */
export function interpretEvent(gateway: GatewayName, type: string, object: Record<string, unknown>): Interpreted {
  const metadata = stringMap(object.metadata);
  const orgId = metadata.orgId && isUuid(metadata.orgId) ? metadata.orgId : null;
  const amount = int(object.amount);
  const currency = str(object.currency)?.toUpperCase();
  const status = INTENT_STATUS[type];
  if (status && object.object === 'payment_intent' && str(object.id) && amount !== undefined) {
    const error = object.last_payment_error as { code?: string; decline_code?: string } | null | undefined;
    const failureCode = status === 'failed' && error ? stripeFailureCode(error.code, error.decline_code) : undefined;
    return {
      objectId: str(object.id)!,
      orgId,
      update: {
        gatewayPaymentId: str(object.id)!,
        // Off-session and the bank wants the customer: the customer must act, not a new card.
        status: failureCode === 'authentication_required' ? 'requires_action' : status,
        ...(failureCode ? { failureCode } : {}),
        amount,
        metadata,
        ...(currency ? { currency } : {}),
        gateway,
        source: 'webhook',
      },
    };
  }
  if (type === 'charge.refunded' && object.object === 'charge' && str(object.payment_intent) && amount !== undefined) {
    return {
      objectId: str(object.payment_intent)!,
      orgId,
      update: {
        gatewayPaymentId: str(object.payment_intent)!,
        status: 'succeeded',
        amount,
        amountRefunded: int(object.amount_refunded) ?? 0,
        metadata,
        ...(currency ? { currency } : {}),
        gateway,
        source: 'webhook',
      },
    };
  }
  const objectId = object.object === 'payment_intent' ? (str(object.id) ?? null) : (str(object.payment_intent) ?? null);
  return { objectId, orgId };
}

/** How far along a payment an update is: a later state never yields to an earlier one delivered late. */
function progress(u: GatewayPaymentUpdate): number {
  const rank = { processing: 1, requires_action: 1, failed: 2, canceled: 2, succeeded: 3 }[u.status];
  return rank * 1e12 + (u.amountRefunded ?? 0);
}

export interface PaymentWebhooksDeps {
  scope: PaymentEventsScope;
  events: EventPublisher;
  logger: Logger;
  /** Gateways whose webhooks are accepted (a gateway without a configured secret answers 404). */
  verifiers: Partial<Record<GatewayName, WebhookVerifier>>;
  updates: PaymentUpdates;
}

export interface PaymentWebhooks {
  /** Verify → store (deduplicated) → one processing event, in one transaction. Nothing is stored unverified. */
  receive(gateway: GatewayName, rawBody: string, headers: WebhookHeaders): Promise<{ received: boolean; duplicate: boolean }>;
  /** The job handler: applies one stored event in the handler's transaction (idempotent, order-tolerant). */
  process(trx: TxHandle, paymentEventId: string, logger?: Logger): Promise<void>;
  /** Retention: deletes settled events received before `cutoff` (bounded batches); returns how many. */
  prune(cutoff: Date): Promise<number>;
}

export function paymentWebhooks(deps: PaymentWebhooksDeps): PaymentWebhooks {
  const interpretRow = (row: PaymentEventRow) => {
    const e = row.payload as GatewayEvent;
    return interpretEvent(row.gateway as GatewayName, e.type, e.data?.object ?? {});
  };

  return {
    async receive(gateway, rawBody, headers) {
      const verifier = deps.verifiers[gateway];
      if (!verifier) throw gatewayNotConfigured(gateway);
      let event: GatewayEvent;
      try {
        event = verifier.verify(rawBody, headers);
      } catch (err) {
        paymentWebhookEvents.inc({ gateway, result: 'bad_signature' });
        throw err;
      }
      if (typeof event?.id !== 'string' || typeof event.type !== 'string' || !event.data || typeof event.data.object !== 'object') {
        throw webhookBadSignature('the signed body is not a gateway event');
      }
      const it = interpretEvent(gateway, event.type, event.data.object);
      // Only what the signature vouches for routes the event: the org named in the payment's metadata.
      const actionable = it.update !== undefined && it.orgId !== null;
      const id = newId();
      const stored = await deps.scope.app.transaction().execute(async (trx) => {
        const inserted = await repo.insertEvent(trx, {
          id,
          gateway,
          eventId: event.id.slice(0, 255),
          eventType: event.type.slice(0, 200),
          orgId: it.orgId,
          objectId: it.objectId?.slice(0, 255) ?? null,
          eventCreatedAt: new Date((Number.isFinite(event.created) ? event.created : Date.now() / 1000) * 1000),
          payload: event,
          status: actionable ? 'received' : 'ignored',
          outcome: actionable ? null : it.update ? 'no orgId in the payment metadata' : 'event type not handled',
        });
        if (inserted && actionable) {
          await deps.events.add(trx, { name: BILLING_EVENTS.paymentEventReceived, tenantId: it.orgId, payload: { paymentEventId: id, gateway } satisfies PaymentEventReceivedPayload });
        }
        return inserted;
      });
      paymentWebhookEvents.inc({ gateway, result: !stored ? 'duplicate' : actionable ? 'stored' : 'ignored' });
      return { received: true, duplicate: !stored };
    },

    async process(trx, paymentEventId, logger = deps.logger) {
      const t = deps.scope.join(trx);
      const row = await repo.claimEvent(t, paymentEventId);
      if (!row) return;
      const it = interpretRow(row);
      if (!it.update || !row.orgId) {
        await repo.settleEvent(t, row.id, 'ignored', 'nothing to apply');
        return;
      }
      const mine = progress(it.update);
      if (row.objectId) {
        const newer = (await repo.appliedForObject(t, row.gateway, row.objectId, row.id)).find((o) => {
          if (o.eventCreatedAt > row.eventCreatedAt) return true;
          if (o.eventCreatedAt < row.eventCreatedAt) return false;
          const theirs = interpretRow(o).update;
          return theirs !== undefined && progress(theirs) >= mine;
        });
        if (newer) {
          await repo.settleEvent(t, row.id, 'stale', `superseded by ${newer.eventId}`.slice(0, 200));
          logger.info({ gateway: row.gateway, event: row.eventId, supersededBy: newer.eventId }, 'payment event older than one already applied: skipped');
          paymentWebhookEvents.inc({ gateway: row.gateway, result: 'stale' });
          return;
        }
      }
      await deps.updates.applyGatewayPaymentUpdate(row.orgId, it.update, trx);
      await repo.settleEvent(t, row.id, 'processed', null);
      paymentWebhookEvents.inc({ gateway: row.gateway, result: 'processed' });
    },

    async prune(cutoff) {
      let total = 0;
      for (let i = 0; i < 20; i++) {
        const n = await repo.deleteSettledBefore(deps.scope.app, cutoff, 1_000);
        total += n;
        if (n < 1_000) break;
      }
      return total;
    },
  };
}
