import { isIP, type LookupFunction } from 'node:net';
import { bareHost, destinationProblem, guardedLookup as platformGuardedLookup, isForbiddenAddress, type Resolver } from './ssrf.ts';

/**
 * Where an outbound call on a tenant's behalf may go (webhooks, integration connectors): one set of rules.
 * Strict (production): https only, public addresses only, checked when the URL is configured and again at
 * connect time. Otherwise http is allowed to loopback only (tests and development point at local fakes).
 */
export const MAX_URL_LENGTH = 2048;

export { isForbiddenAddress };

const isLoopback = (address: string) => address === '::1' || address.startsWith('127.') || address === '::ffff:127.0.0.1';

export interface UrlPolicy {
  /** https only, public addresses only (production). Otherwise http is allowed to loopback only. */
  strict: boolean;
  /** Name resolution for the checks (tests inject one); the system resolver by default. */
  resolve?: Resolver;
}

/** Why a URL is refused (a sentence for the problem detail), or null when it is acceptable before DNS. */
export function urlProblem(raw: string, policy: UrlPolicy): string | null {
  if (raw.length > MAX_URL_LENGTH) return `must be at most ${MAX_URL_LENGTH} characters`;
  let u: URL;
  try {
    u = new URL(raw);
  } catch {
    return 'must be an absolute URL';
  }
  if (u.username || u.password) return 'must not contain credentials';
  if (u.hash) return 'must not contain a fragment';
  const host = bareHost(u.hostname);
  if (u.protocol === 'https:') {
    if (policy.strict && isIP(host) && isForbiddenAddress(host)) return 'must not point to a private, loopback or link-local address';
    return null;
  }
  if (u.protocol === 'http:' && !policy.strict && (host === 'localhost' || (isIP(host) && isLoopback(host)))) return null;
  return policy.strict ? 'must use https' : 'must use https (http is allowed only to a loopback address outside production)';
}

/** Both checks: the URL itself, then (strict mode) where its host resolves. */
export async function outboundUrlProblem(raw: string, policy: UrlPolicy): Promise<string | null> {
  return urlProblem(raw, policy) ?? (await resolveProblem(raw, policy));
}

/** Resolves the host and refuses forbidden addresses (strict mode); used at registration and on every connect. */
export async function resolveProblem(raw: string, policy: UrlPolicy): Promise<string | null> {
  if (!policy.strict) return null;
  const problem = await destinationProblem(new URL(raw).hostname, policy.resolve);
  if (problem === 'unresolvable') return 'does not resolve';
  return problem ? 'resolves to a private, loopback or link-local address' : null;
}

/**
 * A `lookup` for http(s).request that checks the address actually connected to (no DNS-rebinding window
 * between validation and connect). Non-strict mode connects anywhere (tests, development).
 */
export function guardedLookup(policy: UrlPolicy): LookupFunction | undefined {
  return policy.strict ? platformGuardedLookup(policy.resolve) : undefined;
}
