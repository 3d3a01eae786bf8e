/**
 * Internal events of the integrations module (nothing outside it consumes them). The events it
 * CONSUMES are declared by each connector (`Connector.events`); see CONSUMABLE_EVENTS in connectors/.
 */

/** One per (connection, event) delivery and per replayed dead letter; consumed by the sender. */
export const DELIVERY_REQUESTED = 'integrations.delivery_requested';
export interface DeliveryRequestedPayload {
  deliveryId: string;
  connectionId: string;
}

/** One page of a backfill; the handler publishes the next page's request until the source is exhausted. */
export const BACKFILL_REQUESTED = 'integrations.backfill_requested';
export interface BackfillRequestedPayload {
  connectionId: string;
}

/**
 * Billing's subscription events (billing.events.ts), consumed by name. The payload carries what a CRM deal
 * needs: `{ subscriptionId, status, planKey, amountMinor, currency, currencyExponent, change, … }`.
 */
export const BILLING_SUBSCRIPTION_EVENTS = ['billing.subscription_created', 'billing.subscription_updated', 'billing.subscription_canceled'] as const;

/** Product activity the analytics connectors forward (projects' events; billing's above). */
export const PRODUCT_EVENTS = [
  'projects.project_created',
  'projects.task_created',
  'projects.task_updated',
  'projects.task_assigned',
  'projects.comment_added',
  ...BILLING_SUBSCRIPTION_EVENTS,
] as const;

/** Tenancy's membership facts (tenancy.events.ts), consumed by name; ids only, no e-mail addresses. */
export const TENANCY_MEMBER_EVENTS = ['tenancy.member_joined', 'tenancy.member_role_changed', 'tenancy.member_removed'] as const;

/** What the analytics connectors forward: signup, org created, invitations and joins, product activity, subscriptions. */
export const ANALYTICS_EVENTS = ['tenancy.user_signed_up', 'tenancy.org_created', 'tenancy.invitation_created', 'tenancy.member_joined', ...PRODUCT_EVENTS] as const;

/** An inbound vendor webhook stored in the inbox; its processor runs asynchronously. */
export const INBOUND_RECEIVED = 'integrations.inbound_received';
export interface InboundReceivedPayload {
  inboxId: string;
}

/**
 * Published for every processed inbound vendor event (e.g. a deal's stage changed in HubSpot): the way a
 * module learns about changes made in an outside system. Consumers subscribe by name.
 */
export const INBOUND_EVENT = 'integrations.inbound_event';
export interface InboundEventPayload {
  connector: string;
  connectionId: string;
  type: string;
  payload: Record<string, unknown>;
}
