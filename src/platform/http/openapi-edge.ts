import type { RouteOptions } from 'fastify';
import { MAX_IDEMPOTENCY_KEY_LENGTH } from './limits.ts';

const problem = (description: string) => ({ $ref: 'Problem#', description });

/**
 * OpenAPI for the edge protection every /v1 route gets: the Idempotency-Key header and its 409/422 on
 * POST, 429 (rate limits) and 503 (overload, database down) everywhere. Called from the kernel's onRoute.
 */
export function documentEdgeProtection(route: RouteOptions, response: Record<string, unknown>): void {
  if (!route.url.startsWith('/v1')) return;
  response['429'] ??= problem(
    'Rate limit exceeded (RATE_LIMIT.EXCEEDED). `Retry-After` says when to retry; every /v1 response carries ' +
      '`RateLimit-Policy` (e.g. `"principal";q=1200;w=60`) and `RateLimit` (e.g. `"principal";r=17;t=3`).',
  );
  response['503'] ??= problem('Overloaded (HTTP.OVERLOADED) or database unavailable (DB.UNAVAILABLE); retry after `Retry-After` seconds');
  const methods = Array.isArray(route.method) ? route.method : [route.method];
  if (!methods.includes('POST')) return;
  response['409'] ??= problem('IDEMPOTENCY.IN_FLIGHT: a request with this Idempotency-Key is still being processed');
  response['422'] ??= problem('IDEMPOTENCY.KEY_REUSED: this Idempotency-Key was used with a different request');
  const schema = route.schema as { headers?: { type?: string; properties?: Record<string, unknown> } };
  const headers = schema.headers ?? { type: 'object', properties: {} };
  // No maxLength here: the idempotency hook answers an over-long key with its own 400 (IDEMPOTENCY.KEY_INVALID).
  // A copy: route schemas are often shared constants.
  schema.headers = { ...headers, properties: {
    ...headers.properties,
    'idempotency-key': {
      type: 'string',
      description:
        `Optional, 1-${MAX_IDEMPOTENCY_KEY_LENGTH} printable ASCII characters (use a UUID). The first response is stored ` +
        'and replayed for 24 h with `Idempotent-Replayed: true`; same key while in flight → 409, with a different body → 422.',
    },
  } };
}
