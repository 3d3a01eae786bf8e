import { lookup as dnsLookup } from 'node:dns';
import { BlockList, isIP, type LookupFunction } from 'node:net';

export const MAX_URL_LENGTH = 2048;

/** Addresses a webhook must never reach in strict mode: loopback, private, link-local, CGNAT, multicast, … */
const blocked = new BlockList();
for (const [net, prefix] of [
  ['0.0.0.0', 8], ['10.0.0.0', 8], ['100.64.0.0', 10], ['127.0.0.0', 8], ['169.254.0.0', 16], ['172.16.0.0', 12],
  ['192.0.0.0', 24], ['192.0.2.0', 24], ['192.168.0.0', 16], ['198.18.0.0', 15], ['198.51.100.0', 24],
  ['203.0.113.0', 24], ['224.0.0.0', 4], ['240.0.0.0', 4],
] as const) blocked.addSubnet(net, prefix, 'ipv4');
for (const [net, prefix] of [
  ['::', 128], ['::1', 128], ['fc00::', 7], ['fe80::', 10], ['ff00::', 8], ['64:ff9b::', 96], ['2001:db8::', 32],
] as const) blocked.addSubnet(net, prefix, 'ipv6');

export function isForbiddenAddress(address: string): boolean {
  const family = isIP(address);
  if (family === 0) return true;
  if (family === 6) {
    const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address);
    if (mapped) return blocked.check(mapped[1]!, 'ipv4');
    return blocked.check(address, 'ipv6');
  }
  return blocked.check(address, 'ipv4');
}

const isLoopback = (address: string) => address === '::1' || address.startsWith('127.') || address === '::ffff:127.0.0.1';

export interface UrlPolicy {
  /** https only, public addresses only (production). Otherwise http is allowed to loopback only. */
  strict: boolean;
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
  const host = u.hostname.replace(/^\[|\]$/g, '');
  if (u.protocol === 'https:') {
    if (policy.strict && isIP(host) && isForbiddenAddress(host)) return 'must not point to a private, loopback or link-local address';
    return null;
  }
  if (u.protocol === 'http:' && !policy.strict && (host === 'localhost' || (isIP(host) && isLoopback(host)))) return null;
  return policy.strict ? 'must use https' : 'must use https (http is allowed only to a loopback address outside production)';
}

/** Resolves the host and refuses forbidden addresses (strict mode); used at registration and on every connect. */
export async function resolveProblem(raw: string, policy: UrlPolicy): Promise<string | null> {
  if (!policy.strict) return null;
  const host = new URL(raw).hostname.replace(/^\[|\]$/g, '');
  if (isIP(host)) return isForbiddenAddress(host) ? 'must not point to a private, loopback or link-local address' : null;
  try {
    const addresses = await new Promise<Array<{ address: string }>>((resolve, reject) =>
      dnsLookup(host, { all: true }, (err, list) => (err ? reject(err) : resolve(list))),
    );
    if (addresses.some((a) => isForbiddenAddress(a.address))) return 'resolves to a private, loopback or link-local address';
    return null;
  } catch {
    return 'does not resolve';
  }
}

/**
 * A `lookup` for http(s).request that checks the address actually connected to (no DNS-rebinding window
 * between validation and connect). Non-strict mode connects anywhere (tests, development).
 */
export function guardedLookup(policy: UrlPolicy): LookupFunction | undefined {
  if (!policy.strict) return undefined;
  return (hostname, options, callback) => {
    dnsLookup(hostname, { ...options, all: true }, (err, list) => {
      if (err) return callback(err, '');
      const addrs = list;
      const bad = addrs.find((a) => isForbiddenAddress(a.address));
      if (bad || addrs.length === 0) {
        const e = Object.assign(new Error('webhook target resolves to a forbidden address'), { code: 'WEBHOOK_FORBIDDEN_ADDRESS' });
        return callback(e, '');
      }
      if (options.all) return callback(null, addrs);
      return callback(null, addrs[0]!.address, addrs[0]!.family);
    });
  };
}
