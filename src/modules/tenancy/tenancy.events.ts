/**
 * Events tenancy publishes (through the platform's EventPublisher, in the transaction of the change).
 */

/** An invitation was created; notifications e-mails the accept link. */
export const INVITATION_CREATED = 'tenancy.invitation_created';

/**
 * The token is in the payload because only its hash is stored: outbox rows are platform-internal and
 * kept at most 7 days.
 */
export interface InvitationCreatedPayload {
  invitationId: string;
  email: string;
  role: string;
  token: string;
  /** ISO 8601 (payloads are JSON). */
  expiresAt: string;
  /** The inviting user. */
  invitedBy: string;
}

/*
 * Membership facts, for other modules and integrations (analytics, CRM). They carry ids, never e-mail
 * addresses or names: a consumer that needs a member's address resolves it when it acts, through the
 * tenancy/identity facades, inside the tenant, so an outbox row (kept up to 7 days) spreads no personal
 * data and a user erased meanwhile is not resolved at all.
 */

/** A user signed up (with the org signup creates, whose `tenancy.org_created` commits with it). */
export const USER_SIGNED_UP = 'tenancy.user_signed_up';
export interface UserSignedUpPayload {
  userId: string;
}

/** An organization was created (at signup or by a signed-in user); its creator is its first owner. */
export const ORG_CREATED = 'tenancy.org_created';
export interface OrgCreatedPayload {
  orgId: string;
  name: string;
  createdBy: string;
  /** Created by signup (true) or by an existing user (false). */
  signup: boolean;
}

/** How a membership change came about. */
export type MembershipVia = 'signup' | 'org_created' | 'invitation' | 'member' | 'sso' | 'directory';

/** A user became a member (the org's creator, an accepted invitation, SSO just-in-time, a directory). */
export const MEMBER_JOINED = 'tenancy.member_joined';
export interface MemberJoinedPayload {
  userId: string;
  role: string;
  via: MembershipVia;
  /** Who did it (the user themselves when they joined by signup or invitation). */
  actorId: string | null;
}

export const MEMBER_ROLE_CHANGED = 'tenancy.member_role_changed';
export interface MemberRoleChangedPayload {
  userId: string;
  from: string;
  to: string;
  via: MembershipVia;
  actorId: string | null;
}

/** A member left, was removed, or was deprovisioned by a directory. */
export const MEMBER_REMOVED = 'tenancy.member_removed';
export interface MemberRemovedPayload {
  userId: string;
  /** The role they had. */
  role: string;
  via: 'left' | 'removed' | 'directory';
  actorId: string | null;
}

/** Every membership event above, in one list (consumers subscribe by name). */
export const MEMBERSHIP_EVENTS = [USER_SIGNED_UP, ORG_CREATED, MEMBER_JOINED, MEMBER_ROLE_CHANGED, MEMBER_REMOVED] as const;
