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

export interface PaymentEventReceivedPayload {
  /** The inbox row (billing_payment_events.id), not the gateway's event id. */
  paymentEventId: string;
  gateway: string;
}
