import createClient, { type Client, type ClientOptions } from 'openapi-fetch';
import type { components, paths } from './schema.d.ts';

export type { components, paths };
export type PlinthClient = Client<paths>;

/**
 * A typed client for the Plinth API: every path, parameter, body and response is checked against the
 * OpenAPI document the server publishes. Errors come back as `{ error }` (RFC 9457 problem details).
 *
 *   const plinth = createPlinthClient({ baseUrl: 'https://api.example.com', token });
 *   const { data, error } = await plinth.GET('/v1/orgs/{orgId}/projects', { params: { path: { orgId } } });
 */
export function createPlinthClient(opts: { baseUrl: string; token?: string } & Omit<ClientOptions, 'baseUrl'>): PlinthClient {
  const { token, ...rest } = opts;
  return createClient<paths>({ ...rest, headers: { ...(token ? { authorization: `Bearer ${token}` } : {}), ...(rest.headers as Record<string, string> | undefined) } });
}
