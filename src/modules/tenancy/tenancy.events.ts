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
}
