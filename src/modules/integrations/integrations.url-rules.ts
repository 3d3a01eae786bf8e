import { isIP, type LookupFunction } from 'node:net';
import { bareHost, destinationProblem, guardedLookup, isForbiddenAddress } from '../../platform/net/ssrf.ts';

/**
 * Where a connector may send on a tenant's behalf: the webhook rules (platform/net/ssrf.ts). Strict
 * (production): https only, public addresses only, checked at configuration and again at connect time.
 * Otherwise http is allowed to loopback only (tests and development point SDKs at local fakes).
 */
export interface UrlRules {
  strict: boolean;
}

const isLoopback = (host: string) => host === 'localhost' || host === '::1' || host.startsWith('127.');

/** Why the URL is refused (a sentence), or null. Resolves the host in strict mode. */
export async function urlRuleProblem(raw: string, rules: UrlRules): Promise<string | null> {
  let u: URL;
  try {
    u = new URL(raw);
  } catch {
    return 'must be an absolute URL';
  }
  if (u.username || u.password) return 'must not contain credentials';
  const host = bareHost(u.hostname);
  if (u.protocol === 'http:' && !rules.strict && isLoopback(host)) return null;
  if (u.protocol !== 'https:') return rules.strict ? 'must use https' : 'must use https (http only to a loopback address outside production)';
  if (!rules.strict) return null;
  if (isIP(host)) return isForbiddenAddress(host) ? 'must not point to a private, loopback or link-local address' : null;
  const problem = await destinationProblem(host);
  if (problem === 'unresolvable') return 'does not resolve';
  return problem ? 'resolves to a private, loopback or link-local address' : null;
}

/** For http(s).request: the address actually connected to is checked (no DNS-rebinding window). */
export function connectLookup(rules: UrlRules): LookupFunction | undefined {
  return rules.strict ? guardedLookup() : undefined;
}
