import { lookup as dnsLookup } from 'node:dns';
import { isIP, type LookupFunction } from 'node:net';
import ipaddr from 'ipaddr.js';

/**
 * Outbound-request address policy (SSRF): a server-side request made on a tenant's behalf may reach
 * only global unicast addresses. Classification is ipaddr.js's (maintained IANA special-purpose
 * registries), default deny: anything it does not call `unicast` is refused — loopback, private,
 * link-local, CGNAT, unique-local, site-local (fec0::/10), multicast, broadcast, unspecified, reserved,
 * documentation, benchmarking, and every IPv6 form that embeds an IPv4 address (mapped ::ffff:0:0/96,
 * translated ::ffff:0:0:0/96, the deprecated ::/96 compatible form, NAT64 64:ff9b::/96, 6to4 2002::/16,
 * Teredo 2001::/32), whatever IPv4 address they carry. IPv6 must also be inside 2000::/3.
 */
const GLOBAL_UNICAST_V6 = ipaddr.parseCIDR('2000::/3');

export function isForbiddenAddress(address: string): boolean {
  // Canonical forms only (Node's isIP); shorthand like 1.2.3 or 0x7f.1 is not an address here.
  if (isIP(address) === 0 || !ipaddr.isValid(address)) return true;
  const addr = ipaddr.parse(address);
  if (addr.kind() === 'ipv4') return addr.range() !== 'unicast';
  return addr.range() !== 'unicast' || !addr.match(GLOBAL_UNICAST_V6);
}

export interface ResolvedAddress {
  address: string;
  family: number;
}

/** Resolves a host name to every address (injectable: tests resolve names to what they need). */
export type Resolver = (hostname: string) => Promise<ResolvedAddress[]>;

export const systemResolver: Resolver = (hostname) =>
  new Promise((resolve, reject) =>
    dnsLookup(hostname, { all: true, verbatim: true }, (err, list) => (err ? reject(err) : resolve(list))),
  );

/** Thrown (as a connect error) when a destination resolves to a forbidden address. */
export class ForbiddenAddressError extends Error {
  readonly code = 'FORBIDDEN_ADDRESS';
  constructor(readonly host: string) {
    super(`${host} resolves to an address outbound requests may not reach`);
    this.name = 'ForbiddenAddressError';
  }
}

/** A bare host from URL.hostname (IPv6 literals come bracketed). */
export const bareHost = (hostname: string) => hostname.replace(/^\[|\]$/g, '');

/** Null when every address of the host is allowed; the reason otherwise. Does not throw. */
export async function destinationProblem(hostname: string, resolve: Resolver = systemResolver): Promise<'forbidden' | 'unresolvable' | null> {
  const host = bareHost(hostname);
  if (isIP(host)) return isForbiddenAddress(host) ? 'forbidden' : null;
  try {
    const addresses = await resolve(host);
    if (addresses.length === 0) return 'unresolvable';
    return addresses.some((a) => isForbiddenAddress(a.address)) ? 'forbidden' : null;
  } catch {
    return 'unresolvable';
  }
}

/**
 * A `lookup` for http(s).request / undici that checks the addresses actually connected to, after
 * resolution, so a name that changes its answer after validation (DNS rebinding) or an internal name
 * is refused at connect time. Node skips `lookup` for IP literals: check those with isForbiddenAddress.
 */
export function guardedLookup(resolve: Resolver = systemResolver): LookupFunction {
  return (hostname, options, callback) => {
    const cb = callback as (err: Error | null, address?: string | ResolvedAddress[], family?: number) => void;
    resolve(hostname).then(
      (addresses) => {
        if (addresses.length === 0 || addresses.some((a) => isForbiddenAddress(a.address))) return cb(new ForbiddenAddressError(hostname));
        const wanted = options.family === 4 || options.family === 6 ? addresses.filter((a) => a.family === options.family) : addresses;
        if (wanted.length === 0) return cb(Object.assign(new Error(`no IPv${options.family} address for ${hostname}`), { code: 'ENOTFOUND' }));
        if (options.all) return cb(null, wanted);
        return cb(null, wanted[0]!.address, wanted[0]!.family);
      },
      (err: Error) => cb(err),
    );
  };
}
