import { PRIVATE_KEYS, type ConnectorEvent } from '../integrations.connector.ts';

/**
 * What the analytics connectors (PostHog, Segment) make of one outbox event: the event itself, who did it,
 * and the identity calls it implies — a user's `identify` on signup or joining, the organization's group
 * traits on creation and subscription changes. Shared so both vendors see the same facts.
 *
 * Personal data: tenancy's events carry ids only, and only listed properties leave (an invitation's e-mail
 * and token never do, and fan-out already dropped PRIVATE_KEYS). No e-mail address or name is
 * sent to an analytics vendor: people are their Plinth user ids there.
 */
export interface AnalyticsCall {
  /** The acting user (or `org:<id>` when none): PostHog's distinct id, Segment's userId. */
  userId: string;
  event: string;
  properties: Record<string, unknown>;
  /** Traits of `userId` to identify them with (signup, joining an org). */
  identify?: Record<string, unknown>;
  /** Traits of the organization (the event's tenant) as a group. */
  groupTraits?: Record<string, unknown>;
}

const pick = (payload: Record<string, unknown>, keys: string[]) => Object.fromEntries(keys.filter((k) => payload[k] !== undefined).map((k) => [k, payload[k]]));
const str = (v: unknown) => (typeof v === 'string' ? v : undefined);

/** Who did it: the acting user when the event names one, else the org itself. */
export function distinctIdOf(payload: Record<string, unknown>, tenantId: string): string {
  return str(payload.actorId) ?? str(payload.authorId) ?? `org:${tenantId}`;
}

export function analyticsCall(e: ConnectorEvent): AnalyticsCall {
  const p = e.payload;
  switch (e.name) {
    case 'tenancy.user_signed_up': {
      const userId = str(p.userId) ?? `org:${e.tenantId}`;
      return { userId, event: e.name, properties: {}, identify: { plinth_user_id: userId, signed_up_at: e.occurredAt } };
    }
    case 'tenancy.org_created': {
      const userId = str(p.createdBy) ?? `org:${e.tenantId}`;
      return { userId, event: e.name, properties: pick(p, ['signup']), groupTraits: { name: p.name, created_at: e.occurredAt } };
    }
    case 'tenancy.invitation_created':
      return { userId: str(p.invitedBy) ?? `org:${e.tenantId}`, event: e.name, properties: pick(p, ['invitationId', 'role', 'expiresAt']) };
    case 'tenancy.member_joined': {
      const userId = str(p.userId) ?? `org:${e.tenantId}`;
      return { userId, event: e.name, properties: pick(p, ['role', 'via']), identify: { plinth_user_id: userId } };
    }
  }
  const properties = Object.fromEntries(Object.entries(p).filter(([k]) => !PRIVATE_KEYS.has(k)));
  const groupTraits = e.name.startsWith('billing.subscription_') ? { plan: p.planKey ?? null, subscription_status: p.status ?? null } : undefined;
  return { userId: distinctIdOf(p, e.tenantId), event: e.name, properties, ...(groupTraits ? { groupTraits } : {}) };
}

/** The organization's traits over a batch (later events win), always with its Plinth id. */
export function groupTraitsOf(calls: AnalyticsCall[], tenantId: string): Record<string, unknown> {
  return Object.assign({ plinth_org_id: tenantId }, ...calls.map((c) => c.groupTraits ?? {}));
}
