import type { ServerResponse } from 'node:http';
import helmet, { type HelmetOptions } from 'helmet';

/** JSON API: nothing should be framed or executed; the docs page sets its own CSP. */
export const HELMET_OPTIONS: HelmetOptions = {
  contentSecurityPolicy: { directives: { defaultSrc: ["'none'"], frameAncestors: ["'none'"] } },
  crossOriginResourcePolicy: { policy: 'same-origin' },
};

let cached: Array<[string, string]> | undefined;

/**
 * The headers helmet sets on every routed response, as a list, for the answers Fastify writes before
 * any hook runs (bad URL, over-long parameter, oversized headers): they must carry them too.
 */
export function securityHeaders(): Array<[string, string]> {
  if (cached) return cached;
  const headers: Array<[string, string]> = [];
  const fake = {
    setHeader: (name: string, value: string | number | string[]) => headers.push([name.toLowerCase(), String(value)]),
    removeHeader: () => {},
  } as unknown as ServerResponse;
  helmet(HELMET_OPTIONS)({} as never, fake, () => {});
  cached = headers;
  return headers;
}
