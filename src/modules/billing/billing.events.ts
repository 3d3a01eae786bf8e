/**
 * Events billing publishes, each in the transaction of the change (outbox), with the org as tenant:
 * webhooks (`billing.*`) and e-mails come from these, never from a second write.
 */
export const BILLING_EVENTS = {
  subscriptionCreated: 'billing.subscription_created',
  subscriptionUpdated: 'billing.subscription_updated',
  subscriptionCanceled: 'billing.subscription_canceled',
  /** What the org is entitled to changed: every instance drops its cached snapshot (handler in billing.jobs.ts). */
  entitlementsChanged: 'billing.entitlements_changed',
  /** A metered quota reached 80 % or 100 % in the current period. */
  usageThresholdCrossed: 'billing.usage_threshold_crossed',
  /** Internal (not a webhook type): a verified payment-gateway webhook was stored in the inbox; the handler applies it. */
  paymentEventReceived: 'billing.payment_event_received',
  /** A trial ends in `trialReminderDays` (once per subscription): the trial-ending e-mail comes from it. */
  trialWillEnd: 'billing.trial_will_end',
  /** A numeric limit refused an action (402), once per limit and period: the limit-reached e-mail. */
  limitReached: 'billing.limit_reached',
  /** An add-on was added to, changed on or removed from the subscription. */
  addonChanged: 'billing.addon_changed',
  // ---- invoices and payments (issue #14)
  /** An invoice got its number and is owed (payment is collected from this event). */
  invoiceFinalized: 'billing.invoice_finalized',
  invoicePaid: 'billing.invoice_paid',
  invoiceVoided: 'billing.invoice_voided',
  /** Dunning gave up (or an operator did): the invoice will not be collected. */
  invoiceUncollectible: 'billing.invoice_marked_uncollectible',
  creditNoteCreated: 'billing.credit_note_created',
  paymentSucceeded: 'billing.payment_succeeded',
  /** A payment attempt failed; the payload says when the next one is, or what happens at the end of dunning. */
  paymentFailed: 'billing.payment_failed',
  /** The subscription became past_due because its invoice could not be collected (also a subscription_updated). */
  subscriptionPastDue: 'billing.subscription_past_due',
} as const;

export type BillingEventName = (typeof BILLING_EVENTS)[keyof typeof BILLING_EVENTS];

export interface SubscriptionEventPayload {
  subscriptionId: string;
  status: string;
  planId: string;
  /** The plan's key (e.g. "pro"), null if the plan was removed from the catalog. */
  planKey: string | null;
  priceId: string;
  interval: string | null;
  quantity: number;
  /** The recurring amount per interval in minor units (null for a metered price); 10^currencyExponent minor units make one unit. */
  amountMinor: number | null;
  currency: string;
  currencyExponent: number;
  /** What happened: created, trial_started, activated, renewed, plan_changed, change_scheduled, quantity_changed,
   * past_due, recovered, paused, resumed, cancel_scheduled, cancel_unscheduled, canceled. */
  change: string;
  previousStatus: string | null;
  currentPeriodEnd: string;
  /** The subscription's version after this change (1 at creation, +1 per change): one event per version. */
  version: number;
}

export interface EntitlementsChangedPayload {
  /** The org's entitlements_version now committed: older cached snapshots are refused. */
  version: number;
}

export interface UsageThresholdPayload {
  metric: string;
  /** 80 or 100 */
  threshold: number;
  usage: number;
  quota: number;
  periodStart: string;
}

export interface PaymentEventReceivedPayload {
  /** The inbox row (billing_payment_events.id), not the gateway's event id. */
  paymentEventId: string;
  gateway: string;
}

export interface TrialWillEndPayload {
  /** The claim in billing_notices: also the e-mail's Message-ID. */
  noticeId: string;
  subscriptionId: string;
  planKey: string | null;
  planName: string | null;
  trialEnd: string;
  daysLeft: number;
}

export interface LimitReachedPayload {
  limit: string;
  allowed: number;
  usage: number;
  /** The period it was reached in (its start, ISO 8601): one e-mail per limit and period. */
  periodKey: string;
}

export interface AddonChangedPayload {
  subscriptionId: string;
  addonId: string;
  addonKey: string;
  /** What happened: added, quantity_changed, removed. */
  change: string;
  quantity: number;
  previousQuantity: number;
}

export interface InvoiceEventPayload {
  invoiceId: string;
  number: string | null;
  status: string;
  reason: string;
  subscriptionId: string | null;
  currency: string;
  currencyExponent: number;
  total: number;
  amountDue: number;
  amountPaid: number;
  periodStart: string;
  periodEnd: string;
}

export interface PaymentEventPayload {
  invoiceId: string;
  invoiceNumber: string | null;
  attemptId: string;
  attemptNo: number;
  gateway: string;
  gatewayPaymentId: string | null;
  status: string;
  amount: number;
  currency: string;
  failureCode: string | null;
  /** When the payment is retried next (failed only; null when retries are exhausted). */
  nextPaymentAttemptAt: string | null;
  /** Failed with no retry left: what happens and when (cancel or downgrade). */
  finalAction: 'cancel' | 'downgrade' | null;
  finalActionAt: string | null;
}

export interface CreditNoteEventPayload {
  creditNoteId: string;
  invoiceId: string;
  amount: number;
  currency: string;
  outstandingAmount: number;
  balanceAmount: number;
  refundAmount: number;
}
