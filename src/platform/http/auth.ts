import type { FastifyRequest } from 'fastify';
import { isUuid } from '../ids.ts';
import { AppError } from './errors.ts';
import type { App } from './server.ts';

/** Who is calling. Produced by the tenancy module's Authenticator; read by every other module. */
export interface Principal {
  kind: 'user' | 'api_key';
  /** The user; for an API key, the user who created it. */
  userId: string;
  sessionId?: string;
  apiKeyId?: string;
  /** An API key belongs to exactly one org and can act only there. */
  apiKeyOrgId?: string;
  isPlatformAdmin: boolean;
}

/** The caller's standing in the org named by the route's `orgId`: the tenant context of the request. */
export interface OrgAccess {
  orgId: string;
  role: string;
  permissions: ReadonlySet<string>;
}

/** What the kernel asks of an Authenticator's lookups. */
export interface LookupOptions {
  /**
   * Call before a lookup that leaves the process (a cache miss: Postgres). The kernel checks the client
   * IP's auth-failure budget there (429 once spent), so lookups answered from memory cost no round trip.
   */
  beforeLookup?: () => Promise<void>;
}

/** Implemented by the tenancy module (sessions come from identity, memberships and API keys from tenancy);
 * the kernel only enforces what routes declare. */
export interface Authenticator {
  /** null when there is no credential or it is unknown, expired or revoked. */
  authenticate(request: FastifyRequest, opts?: LookupOptions): Promise<Principal | null>;
  /** null when the principal has no membership in the org (or the org does not exist): answered as 404. */
  resolveAccess(principal: Principal, orgId: string, opts?: LookupOptions): Promise<OrgAccess | null>;
}

/**
 * The client IP's auth-failure budget for this request (set by the auth-failure limit when rate limits
 * are on). Checked once per request: before the first lookup that leaves the process, or, when every
 * lookup was answered from memory, in the rate limiter's single round trip (rate-limit.ts).
 */
export interface AuthFailureGate {
  /** Whether the budget was already checked for this request. */
  readonly checked: boolean;
  /** Checks it now (once); throws 429 RATE_LIMIT.AUTH_FAILURES when spent. */
  check(): Promise<void>;
}

declare module 'fastify' {
  interface FastifyRequest {
    principal?: Principal;
    access?: OrgAccess;
    /** Set when the authorization hook refused the request (401, or 403/404 on an org): counted per client IP. */
    authFailed?: boolean;
    authFailureGate?: AuthFailureGate;
  }
}

/** Declared permissions that need no org: any signed-in principal, or a platform operator. */
export const AUTHENTICATED = 'authenticated';
export const PLATFORM_ADMIN = 'platform:admin';

/** The principal of an authorized request; throws if a route forgot to declare its permission. */
export function principalOf(request: FastifyRequest): Principal {
  if (!request.principal) throw new AppError('AUTH.UNAUTHENTICATED', 401, 'Authentication required');
  return request.principal;
}

/** The org access of an authorized org-scoped request. */
export function accessOf(request: FastifyRequest): OrgAccess {
  if (!request.access) throw new AppError('AUTH.UNAUTHENTICATED', 401, 'Authentication required');
  return request.access;
}

const unauthenticated = () =>
  new AppError('AUTH.UNAUTHENTICATED', 401, 'A valid bearer token is required', {}, { 'www-authenticate': 'Bearer' });

/**
 * Every /v1 route must declare `config.permission` or `config.public` — registering one that does not
 * fails at start-up. On each request: authenticate (401), resolve the org from `:orgId` (404 when the
 * caller is not a member, so other tenants' ids reveal nothing), then check the permission (403).
 * It runs before schema validation, so a caller without access learns nothing from validation errors
 * (no credential + bad body is 401, not 400).
 */
export function registerAuthorization(app: App, authenticator: Authenticator): void {
  app.addHook('onRoute', (route) => {
    if (!route.url.startsWith('/v1') || route.config?.public) return;
    const permission = route.config?.permission;
    if (!permission) {
      throw new Error(`Route ${String(route.method)} ${route.url} declares neither config.permission nor config.public`);
    }
    if (permission !== AUTHENTICATED && permission !== PLATFORM_ADMIN && !route.url.includes(':orgId')) {
      throw new Error(`Route ${String(route.method)} ${route.url} needs permission ${permission} but has no :orgId`);
    }
  });

  app.addHook('preValidation', async (request) => {
    const config = request.routeOptions.config;
    if (!request.routeOptions.url?.startsWith('/v1') || config.public) return;
    try {
      await authorize(request, config.permission!);
    } catch (err) {
      // Only a refusal (401/403/404) spends the client's auth-failure budget: a lookup that failed because
      // the database or Redis is unavailable (5xx) says nothing about the credentials.
      if (err instanceof AppError && err.status < 500) {
        request.authFailed = true;
        // A refusal answered from memory has not checked the budget yet: a spent one turns it into a 429.
        const gate = request.authFailureGate;
        if (gate && !gate.checked) await gate.check();
      }
      throw err;
    }
  });

  async function authorize(request: FastifyRequest, permission: string): Promise<void> {
    const gate = request.authFailureGate;
    const lookup: LookupOptions = gate ? { beforeLookup: () => (gate.checked ? Promise.resolve() : gate.check()) } : {};
    const principal = await authenticator.authenticate(request, lookup);
    if (!principal) throw unauthenticated();
    request.principal = principal;
    if (permission === AUTHENTICATED) return;
    if (permission === PLATFORM_ADMIN) {
      if (!principal.isPlatformAdmin) throw new AppError('AUTH.FORBIDDEN', 403, 'Platform administrators only');
      return;
    }
    // Params are not validated yet: a malformed org id is simply an org the caller is not in.
    const orgId = (request.params as Record<string, string>).orgId ?? '';
    const access = isUuid(orgId) ? await authenticator.resolveAccess(principal, orgId, lookup) : null;
    if (!access) throw new AppError('ORG.NOT_FOUND', 404, 'Organization not found');
    if (!access.permissions.has(permission)) {
      throw new AppError('AUTH.FORBIDDEN', 403, `This action needs the permission ${permission}`, { permission });
    }
    request.access = access;
  }
}

/** Used when no Authenticator is wired (kernel tests): every protected route answers 401. */
export const denyAllAuthenticator: Authenticator = {
  authenticate: async () => null,
  resolveAccess: async () => null,
};
