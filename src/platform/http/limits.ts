import { Type } from '@sinclair/typebox';

/** The largest page any list route returns; clients asking for more get a 400 from the schema. */
export const MAX_PAGE_SIZE = 100;
export const DEFAULT_PAGE_SIZE = 20;

/** The `limit` query parameter every list route uses. */
export const PageLimit = Type.Integer({
  minimum: 1,
  maximum: MAX_PAGE_SIZE,
  default: DEFAULT_PAGE_SIZE,
  description: `Page size, 1-${MAX_PAGE_SIZE} (default ${DEFAULT_PAGE_SIZE})`,
});

/** Idempotency-Key values longer than this are rejected with 400 (IDEMPOTENCY.KEY_INVALID). */
export const MAX_IDEMPOTENCY_KEY_LENGTH = 255;
