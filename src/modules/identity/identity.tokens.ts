import { createHash, randomBytes } from 'node:crypto';

/** An opaque bearer secret: prefix + 256 bits from the CSPRNG, base64url. */
export function newSecret(prefix: string): string {
  return prefix + randomBytes(32).toString('base64url');
}

/** SHA-256 is enough for 256-bit random secrets (no dictionary to attack); lookups stay O(1). */
export function sha256Hex(value: string): string {
  return createHash('sha256').update(value).digest('hex');
}
