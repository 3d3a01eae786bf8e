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
