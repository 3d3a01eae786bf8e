import { createHash, randomBytes } from 'node:crypto';
import { isUuid } from '../../platform/ids.ts';

/**
 * The `state` of an OIDC login: the org id (so the callback knows whose tenant context to open) and 32
 * random bytes. Only its SHA-256 is stored, once; an altered state matches no row.
 */
export function newOrgState(orgId: string): string {
  return `${Buffer.from(orgId.replaceAll('-', ''), 'hex').toString('base64url')}.${randomBytes(32).toString('base64url')}`;
}

export function orgOfState(state: string): string | null {
  const [org, rest] = state.split('.');
  if (!org || !rest || org.length !== 22) return null;
  const hex = Buffer.from(org, 'base64url').toString('hex');
  const id = `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
  return isUuid(id) ? id : null;
}

export const randomToken = () => randomBytes(32).toString('base64url');
export const hashState = (state: string) => createHash('sha256').update(state).digest('hex');
