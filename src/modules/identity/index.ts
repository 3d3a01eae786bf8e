import type { Database, TxHandle } from '../../platform/db/database.ts';
import type { ActorContext } from '../../platform/http/actor.ts';
import type { Principal } from '../../platform/http/auth.ts';
import { asPlugin } from '../../platform/http/module-routes.ts';
import type { ModuleSurface } from '../../platform/module.ts';
import { registerIdentityJobs } from './identity.jobs.ts';
import { createIdentityRepo, type SessionInfo, type User } from './identity.repo.ts';
import { identityRoutes } from './identity.routes.ts';
import { createIdentityService, type DisableHook, type IdentityServiceDeps, type RequestMeta } from './identity.service.ts';
import type { NewSession, SessionLookupOptions, SessionMeta } from './identity.sessions.ts';

export { Email, Password, PersonName, UserSchema } from './identity.schemas.ts';
export { requestMeta, userPrincipal } from './identity.routes.ts';
export { normalizeEmail, type DisableHook, type RequestMeta } from './identity.service.ts';
export type { SessionInfo, User } from './identity.repo.ts';
export { SESSION_PREFIX, type NewSession, type SessionLookupOptions, type SessionMeta } from './identity.sessions.ts';
export { sha256Hex, newSecret } from './identity.tokens.ts';
export type { LockoutLimits } from './identity.lockout.ts';
export { runAdminCommand } from './identity.cli.ts';

/** The service's dependencies, with the database instead of the repo built over it. */
export type IdentityDeps = Omit<IdentityServiceDeps, 'repo'> & { db: Database };

/** Accounts, passwords, sessions and login throttling. Orgs, RBAC and the Authenticator live in tenancy. */
export interface Identity extends ModuleSurface {
  getUser(id: string): Promise<User>;
  getUsers(ids: string[]): Promise<Map<string, User>>;
  findUserByEmail(email: string): Promise<User | null>;
  /** false for a disabled or unknown user (an API key stops working when its creator is disabled). */
  isActive(userId: string): Promise<boolean>;

  /** Password policy + argon2id hash: call it before the transaction (it takes tens of milliseconds). */
  preparePassword(password: string, context: { email?: string; name?: string }): Promise<string>;
  /**
   * Signup, together with tenancy: creates the user in the CALLER's transaction, so the user, the first
   * org and its owner membership commit or roll back together. 409 IDENTITY.EMAIL_TAKEN.
   */
  createUser(trx: TxHandle, input: { email: string; name: string; passwordHash: string }): Promise<User>;
  /** Opens a session for the user in the caller's transaction (signup's first session). */
  startSession(trx: TxHandle, userId: string, meta: SessionMeta): Promise<NewSession>;
  /**
   * A `pls_…` bearer token → the user's principal, or null (unknown, expired, revoked, user disabled).
   * Answered from the process's session cache when it can; `beforeLookup` runs before Postgres is asked.
   */
  authenticateSession(token: string, opts?: SessionLookupOptions): Promise<Principal | null>;

  login(email: string, password: string, meta: RequestMeta): Promise<NewSession & { user: User }>;
  logout(principal: Principal & { sessionId: string }, ctx: ActorContext): Promise<number>;
  revokeSession(principal: Principal, sessionId: string, ctx: ActorContext): Promise<number>;
  revokeOtherSessions(principal: Principal & { sessionId: string }, ctx: ActorContext): Promise<number>;
  listSessions(userId: string): Promise<SessionInfo[]>;
  changePassword(principal: Principal, current: string, next: string, meta: SessionMeta, ctx: ActorContext): Promise<NewSession>;
  /** Revokes every session of the user (audited in the platform chain) and invalidates them on every instance. */
  revokeAllSessions(userId: string, ctx: ActorContext): Promise<number>;
  setDisabled(userId: string, disabled: boolean, ctx: ActorContext): Promise<User>;
  /** Work another module does in the disabling transaction (tenancy: revoke the user's API keys). */
  onDisabled(hook: DisableHook): void;
  /** `plinth admin grant|revoke <email>`. */
  setPlatformAdmin(email: string, value: boolean): Promise<User>;
}

export function createIdentity(deps: IdentityDeps): Identity {
  const { db, ...rest } = deps;
  const service = createIdentityService({ ...rest, repo: createIdentityRepo(db) });
  return {
    ...service,
    name: 'identity',
    routes: [{ name: 'identity', prefix: '/v1', plugin: asPlugin(identityRoutes(service)) }],
    registerJobs: registerIdentityJobs,
  };
}
