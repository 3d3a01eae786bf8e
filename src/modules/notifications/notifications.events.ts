/** Domain events a webhook endpoint may subscribe to (published by other modules through the outbox). */
export const WEBHOOK_EVENT_TYPES = [
  'projects.project_created',
  'projects.task_created',
  'projects.task_updated',
  'projects.task_assigned',
  'projects.comment_added',
  'billing.subscription_created',
  'billing.subscription_updated',
  'billing.subscription_canceled',
  'billing.entitlements_changed',
  'billing.usage_threshold_crossed',
  'billing.invoice_finalized',
  'billing.invoice_paid',
  'billing.invoice_voided',
  'billing.invoice_marked_uncollectible',
  'billing.credit_note_created',
  'billing.payment_succeeded',
  'billing.payment_failed',
  'billing.subscription_past_due',
  'reporting.export_ready',
  // Audit streaming to a SIEM: one per chained audit event of the org, in seq order (audit's sequencer).
  'audit.event_recorded',
] as const;

export type WebhookEventType = (typeof WEBHOOK_EVENT_TYPES)[number];

/** Internal: one per (endpoint, event) delivery and per manual redelivery; consumed by the webhook sender. */
export const DELIVERY_REQUESTED = 'notifications.webhook_delivery_requested';

export interface DeliveryRequestedPayload {
  deliveryId: string;
}

/** Consumed for the invitation e-mail (tenancy publishes it in the invitation's transaction). */
export { INVITATION_CREATED } from '../tenancy/index.ts';
