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
