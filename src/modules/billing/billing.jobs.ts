import { systemActor } from '../../platform/http/actor.ts';
import type { JobRegistry } from '../../platform/outbox/registry.ts';
import { PROJECT_EVENTS } from '../projects/index.ts';
import type { DbScope } from '../../platform/db/database.ts';
import { BILLING_EVENTS, type EntitlementsChangedPayload, type LimitReachedPayload, type PaymentEventReceivedPayload, type TrialWillEndPayload, type UsageThresholdPayload } from './billing.events.ts';
import type { BillingTables } from './billing.repo.ts';
import type { BillingMail } from './use-cases/billing-mail.ts';
import type { InvoiceEventPayload, PaymentEventPayload, SubscriptionEventPayload } from './billing.events.ts';
import type { TxHandle } from '../../platform/db/database.ts';
import type { EventEnvelope } from '../../platform/outbox/publisher.ts';
import type { Mailer } from '../notifications/index.ts';
import { dunningMail } from './use-cases/invoice-documents.ts';
import type { InvoicingCore } from './use-cases/invoices.ts';
import type { BillingService } from './billing.service.ts';
import type { PaymentWebhooks } from './use-cases/payment-webhooks.ts';
import type { PaymentReconciliation } from './use-cases/reconciliation.ts';

/** Orgs advanced per run of the renewal schedule; the rest are picked up by the next run. */
const RENEWALS_PER_RUN = 500;

/**
 * - `billing.entitlements_cache`: every change of an org's entitlements commits a
 *   `billing.entitlements_changed` event; this handler drops the cached snapshot (Redis + every
 *   instance's L1 via pub/sub), retried until Redis takes it. The request also invalidates at once.
 * - `billing.renewals`: trial ends, renewals, scheduled changes and dunning by the wall clock.
 * - `billing.meter_tasks`: product usage from product events — each `projects.task_created` is one
 *   `tasks.created` usage event keyed by the event id, in the handler's transaction: nothing on the
 *   request's path, and a redelivered event is counted once.
 */
export interface BillingPaymentJobs {
  webhooks: PaymentWebhooks;
  reconciliation: PaymentReconciliation;
  /** Default hourly. */
  reconcileEveryMs?: number;
}

/** Settled inbox events are kept this long (the gateway's own retry window is 3 days), then pruned. */
const PAYMENT_EVENT_RETENTION_MS = 30 * 86_400_000;

export function registerBillingJobs(jobs: JobRegistry, service: Pick<BillingService, 'invalidate' | 'advanceDue' | 'recordProductUsage'>, payments?: BillingPaymentJobs): void {
  if (payments) registerPaymentJobs(jobs, payments);
  jobs.subscribe(PROJECT_EVENTS.taskCreated, 'billing.meter_tasks', async (event, { trx }) => {
    if (!event.tenantId) return;
    await service.recordProductUsage(trx, event.tenantId, [{ key: `event:${event.id}`, metric: 'tasks.created', timestamp: new Date(event.occurredAt), value: 1, properties: {} }]);
  }, { batchSafe: true }); // its only effect is the usage rows in the handler's transaction
  jobs.subscribe<EntitlementsChangedPayload>(
    BILLING_EVENTS.entitlementsChanged,
    'billing.entitlements_cache',
    async ({ tenantId, payload }) => {
      if (!tenantId) return;
      if (!(await service.invalidate(tenantId, payload.version))) throw new Error('Redis unreachable: entitlement invalidation not landed yet');
    },
    { maxAttempts: 20, backoffBaseMs: 500, backoffMaxMs: 30_000 },
  );
  jobs.schedule('billing.renewals', { everyMs: 60_000 }, async () => {
    await service.advanceDue(systemActor('billing.renewals'), RENEWALS_PER_RUN);
  });
}

/**
 * - `billing.payment_events`: applies each stored payment webhook (inbox row) in the org's tenant
 *   transaction; redelivery and out-of-order delivery are absorbed (claim + "newer already applied" check).
 * - `billing.payments_reconcile`: hourly, one runner across workers (a schedule): compares local attempts
 *   with the gateway, repairs status drift, reports the rest; prunes settled inbox rows past retention.
 */
function registerPaymentJobs(jobs: JobRegistry, p: BillingPaymentJobs): void {
  jobs.subscribe<PaymentEventReceivedPayload>(
    BILLING_EVENTS.paymentEventReceived,
    'billing.payment_events',
    async (event, { trx, logger }) => p.webhooks.process(trx, event.payload.paymentEventId, logger),
    { maxAttempts: 10, backoffBaseMs: 2_000, backoffMaxMs: 600_000 },
  );
  jobs.schedule('billing.payments_reconcile', { everyMs: p.reconcileEveryMs ?? 3_600_000 }, async ({ scheduledAt }) => {
    await p.reconciliation.run(scheduledAt);
    await p.webhooks.prune(new Date(scheduledAt.getTime() - PAYMENT_EVENT_RETENTION_MS));
  });
}

/**
 * Billing's e-mails (use-cases/billing-mail.ts), from its own events: each handler runs in the outbox's
 * transaction, where the notice claim commits; a failed send is retried with backoff.
 */
export function registerBillingMailJobs(jobs: JobRegistry, mail: BillingMail, scope: DbScope<BillingTables>): void {
  const retry = { maxAttempts: 8, backoffBaseMs: 10_000, backoffMaxMs: 3_600_000 };
  jobs.subscribe<TrialWillEndPayload>(BILLING_EVENTS.trialWillEnd, 'billing.mail_trial_ending', async (event, { trx }) => {
    if (event.tenantId) await mail.trialWillEnd(scope.join(trx), event.tenantId, event.payload);
  }, retry);
  jobs.subscribe<UsageThresholdPayload>(BILLING_EVENTS.usageThresholdCrossed, 'billing.mail_quota_reached', async (event, { trx }) => {
    if (event.tenantId) await mail.thresholdCrossed(scope.join(trx), event.tenantId, event.payload);
  }, retry);
  jobs.subscribe<LimitReachedPayload>(BILLING_EVENTS.limitReached, 'billing.mail_limit_reached', async (event, { trx }) => {
    const p = event.payload;
    if (event.tenantId) await mail.limitReached(scope.join(trx), event.tenantId, { limit: p.limit, periodKey: p.periodKey, allowed: p.allowed, usage: p.usage, kind: 'limit' });
  }, retry);
}

/** Invoiced periods are remembered this long (their renewal events are redelivered within days at most). */
const INVOICE_QUEUE_RETENTION_MS = 35 * 86_400_000;

/** How long each batch of the invoice run holds background consumers back (longer than a batch takes under load; released when the run is done). */
const INVOICE_RUN_HOLD_MS = 15_000;

/** Dunning steps (retries, final actions) per run of the dunning schedule; the rest wait for the next run. */
const DUNNING_PER_RUN = 500;

/**
 * Invoices and payments (issue #14), all driven by outbox events:
 * - `billing.invoice_on_{created,updated,canceled}`: a subscription change that left charges or closed a usage
 *   window (creation, activation, renewal at the period end — the `billing.renewals` schedule, one runner
 *   across workers —, plan or seat change, cancellation) is invoiced and finalized in the handler's transaction.
 * - `billing.collect_payment`: a finalized invoice is charged (gateway call with the invoice/attempt key).
 * - `billing.invoice_pdf[_paid]`: the PDF is rendered into storage.
 * - `billing.dunning_email[_final]`: the billing contact hears of a failed payment / the final action.
 * - `billing.dunning` schedule: retries and final actions due by the wall clock.
 * - `billing.invoice_run` schedule: the renewals queued by `billing.renewals`, invoiced in batches
 *   (use-cases/invoice-run.ts); `billing.invoice_on_updated` leaves wall-clock renewals to it.
 */
export function registerInvoiceJobs(jobs: JobRegistry, service: BillingService, deps: { mailer?: Mailer; scope: InvoicingCore['scope'] }): void {
  // While the invoice run drains the queue, the follow-up work it creates (payment collection, PDFs, dunning
  // e-mails, subscription-event invoicing; consumers marked `background`) waits: finalizing a period end's
  // invoices comes first. Renewed by every batch that finds work, released when a run has emptied the queue.
  const hold = (done?: boolean) => jobs.holdBackground(done ? 0 : INVOICE_RUN_HOLD_MS);
  const invoiceOn = (name: string, consumer: string) =>
    jobs.subscribe<SubscriptionEventPayload>(name, consumer, async (event, { trx, logger }) => {
      if (!event.tenantId) return;
      await service.invoiceForSubscriptionEvent(trx, event.tenantId, event.payload.change, event.payload);
      // A renewal by the wall clock was queued for the invoice run: start it now (the schedule is the safety net).
      if (event.payload.change === 'renewed') service.kickInvoiceRun(logger, hold);
    }, { batchSafe: true, background: true }); // invoices in the handler's transaction; a repeated kick is harmless
  invoiceOn(BILLING_EVENTS.subscriptionCreated, 'billing.invoice_on_created');
  invoiceOn(BILLING_EVENTS.subscriptionUpdated, 'billing.invoice_on_updated');
  invoiceOn(BILLING_EVENTS.subscriptionCanceled, 'billing.invoice_on_canceled');
  jobs.subscribe<InvoiceEventPayload>(
    BILLING_EVENTS.invoiceFinalized,
    'billing.collect_payment',
    async (event, { trx }) => {
      if (!event.tenantId) return;
      await service.collectForEvent(trx, event.tenantId, event.payload.invoiceId);
    },
    { maxAttempts: 10, backoffBaseMs: 5_000, backoffMaxMs: 600_000, background: true },
  );
  const pdf = async (event: { tenantId: string | null; payload: InvoiceEventPayload }, { trx }: { trx: TxHandle }) => {
    if (event.tenantId) await service.renderInvoicePdf(trx, event.tenantId, event.payload.invoiceId);
  };
  jobs.subscribe<InvoiceEventPayload>(BILLING_EVENTS.invoiceFinalized, 'billing.invoice_pdf', pdf, { background: true });
  jobs.subscribe<InvoiceEventPayload>(BILLING_EVENTS.invoicePaid, 'billing.invoice_pdf_paid', pdf, { background: true });
  const mail = (kind: 'payment_failed' | 'uncollectible') => async (event: EventEnvelope<PaymentEventPayload & InvoiceEventPayload>, { trx }: { trx: TxHandle }) => {
    if (!event.tenantId || !deps.mailer) return;
    // An invoice marked uncollectible by hand changes no subscription: nothing to tell.
    if (kind === 'uncollectible' && !(event.payload as { finalAction?: string }).finalAction) return;
    const m = await dunningMail(deps.scope, trx, event.tenantId, kind, event.payload);
    // A retried send carries the same Message-ID (the event id): the relay deduplicates.
    if (m) await deps.mailer.send({ ...m, messageId: event.id, tenantId: event.tenantId });
  };
  jobs.subscribe(BILLING_EVENTS.paymentFailed, 'billing.dunning_email', mail('payment_failed'), { maxAttempts: 8, backoffBaseMs: 10_000, backoffMaxMs: 3_600_000, background: true });
  jobs.subscribe(BILLING_EVENTS.invoiceUncollectible, 'billing.dunning_email_final', mail('uncollectible'), { maxAttempts: 8, backoffBaseMs: 10_000, backoffMaxMs: 3_600_000, background: true });
  // The invoice run: renewals queued by the renewal schedule, invoiced in batches (one runner per occurrence;
  // a run stops after 10 s and the next occurrence, a second later, goes on; several workers share the queue).
  let pruned = 0;
  jobs.schedule('billing.invoice_run', { everyMs: 1_000 }, async ({ logger }) => {
    const r = await service.runInvoiceQueue({ logger, onBatch: hold });
    if (r.periods > 0) logger.info(r, 'invoice run');
    if (Date.now() - pruned > 3_600_000) {
      pruned = Date.now();
      await service.pruneInvoiceQueue(new Date(Date.now() - INVOICE_QUEUE_RETENTION_MS));
    }
  });
  jobs.schedule('billing.dunning', { everyMs: 60_000 }, async () => {
    await service.runDunningDue(systemActor('billing.dunning'), DUNNING_PER_RUN);
  });
}
