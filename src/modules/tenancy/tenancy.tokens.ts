import { isUuid } from '../../platform/ids.ts';
import { newSecret } from '../identity/index.ts';

/**
 * Invitation tokens and API keys carry their org id (`<prefix><org hex>_<256-bit secret>`), so the
 * lookup runs inside that org's tenant context under RLS instead of needing a cross-tenant index.
 */
export function newOrgToken(prefix: string, orgId: string): string {
  return newSecret(`${prefix}${orgId.replace(/-/g, '')}_`);
}

export function orgOfToken(prefix: string, token: string): string | null {
  if (!token.startsWith(prefix) || token.length > 120) return null;
  const hex = token.slice(prefix.length, prefix.length + 32);
  if (token[prefix.length + 32] !== '_' || !/^[0-9a-f]{32}$/.test(hex)) return null;
  const id = `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
  return isUuid(id) ? id : null;
}
