/**
 * What happens to accounts and sessions is recorded in the platform audit chain; signup's facts (a user
 * joined with an org) are tenancy's to publish. One event: an account was erased (GDPR art. 17), so every
 * module erases or pseudonymizes what it holds about that user (consumers must be idempotent).
 */
export const USER_ERASED = 'identity.user_erased';

export interface UserErasedPayload {
  userId: string;
}

export const IDENTITY_EVENTS = { userErased: USER_ERASED } as const;
