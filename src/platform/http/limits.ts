/** Idempotency-Key values longer than this are rejected with 400 (IDEMPOTENCY.KEY_INVALID). */
export const MAX_IDEMPOTENCY_KEY_LENGTH = 255;
