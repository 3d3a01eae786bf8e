import type { Database, TxHandle } from '../../platform/db/database.ts';
import type { ActorContext } from '../../platform/http/actor.ts';
import type { Principal } from '../../platform/http/auth.ts';
import { asPlugin } from '../../platform/http/module-routes.ts';
import type { ModuleSurface } from '../../platform/module.ts';
import { registerIdentityJobs } from './identity.jobs.ts';
import { createIdentityRepo, type SessionInfo, type User } from './identity.repo.ts';
import { identityRoutes } from './identity.routes.ts';
import { createIdentityService, type DisableHook, type IdentityServiceDeps, type LoginResult, type PasswordGuard, type RequestMeta } from './identity.service.ts';
import { mfaRoutes } from './identity.mfa.routes.ts';
import { createMfaRepo } from './mfa.repo.ts';
import { createDataRightsRepo } from './data-rights.repo.ts';
import { dataRightsRoutes } from './identity.data-rights.routes.ts';
import type { DataExportLink, DataExportSection, ErasureGuard } from './identity.data-rights.ts';
import { createSecretBox } from '../../platform/crypto/secret-box.ts';
import { createWebAuthnRepo } from './webauthn.repo.ts';
import { webauthnRoutes } from './identity.webauthn.routes.ts';
import type { NewSession, SessionLookupOptions, SessionMeta } from './identity.sessions.ts';

export { Email, Password, PersonName, UserSchema } from './identity.schemas.ts';
export { requestMeta, userPrincipal } from './identity.routes.ts';
export { normalizeEmail, type DisableHook, type LoginResult, type PasswordGuard, type RequestMeta } from './identity.service.ts';
export type { SessionInfo, User } from './identity.repo.ts';
export { SESSION_PREFIX, type NewSession, type SessionLookupOptions, type SessionMeta } from './identity.sessions.ts';
export { sha256Hex, newSecret } from './identity.tokens.ts';
export type { LockoutLimits } from './identity.lockout.ts';
export { runAdminCommand } from './identity.cli.ts';
export { IDENTITY_EVENTS, USER_ERASED, type UserErasedPayload } from './identity.events.ts';
export type { DataExportLink, DataExportSection, ErasureGuard } from './identity.data-rights.ts';
export type { WebAuthnSettings } from './identity.webauthn.ts';

/** The service's dependencies, with the database (and master key) instead of what is built over them. */
export type IdentityDeps = Omit<IdentityServiceDeps, 'repo' | 'mfaRepo' | 'secrets' | 'dataRightsRepo' | 'webauthnRepo'> & { db: Database; secretKey: Buffer };

/** Accounts, passwords, sessions and login throttling. Orgs, RBAC and the Authenticator live in tenancy. */
export interface Identity extends ModuleSurface {
  getUser(id: string): Promise<User>;
  /** With `trx`, read in the caller's transaction (e.g. a job's, which the embedded database's one connection holds). */
  getUsers(ids: string[], trx?: TxHandle): Promise<Map<string, User>>;
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
  /** A user without a password (signs in through an IdP: SSO just-in-time provisioning), in the caller's transaction. */
  createExternalUser(trx: TxHandle, input: { email: string; name: string }): Promise<User>;
  /** Opens a session for the user in the caller's transaction (signup's first session, SSO logins). */
  startSession(trx: TxHandle, userId: string, meta: SessionMeta): Promise<NewSession>;
  /**
   * A `pls_…` bearer token → the user's principal, or null (unknown, expired, revoked, user disabled).
   * Answered from the process's session cache when it can; `beforeLookup` runs before Postgres is asked.
   */
  authenticateSession(token: string, opts?: SessionLookupOptions): Promise<Principal | null>;

  /** A session, or `{ mfaRequired, mfaToken }` when the account has a second factor (then POST /v1/auth/login/mfa). */
  login(email: string, password: string, meta: RequestMeta): Promise<LoginResult>;
  /** Whether the user has a second factor — TOTP or a passkey (cached; read per org request when an org requires MFA). */
  mfaEnabled(userId: string): Promise<boolean>;
  /** 403 AUTH.STEP_UP_REQUIRED unless this session proved its second factor within maxAgeSec (users without MFA pass). */
  assertRecentMfa(principal: Principal, maxAgeSec: number): Promise<void>;
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
  /** A check before any password sign-in, signup or password change (sso: 403 AUTH.SSO_REQUIRED for enforced domains). */
  onPasswordUse(guard: PasswordGuard): void;
  /** `plinth admin grant|revoke <email>`. */
  setPlatformAdmin(email: string, value: boolean): Promise<User>;

  /** Data rights: adds a module's section to every user data export (GDPR art. 15). */
  onDataExport(name: string, section: DataExportSection): void;
  /** Data rights: a check before a user is erased (tenancy: not an org's last owner); throws to refuse. */
  onErasure(guard: ErasureGuard): void;
  /** Writes everything Plinth holds about the user to file storage; returns an expiring download link. */
  exportUserData(userId: string, ctx: ActorContext): Promise<DataExportLink>;
  /** Erases the user (GDPR art. 17); other modules follow through `identity.user_erased`. */
  eraseUser(userId: string, ctx: ActorContext): Promise<{ userId: string; erasedAt: Date; auditRecordsErased: number }>;
}

export function createIdentity(deps: IdentityDeps): Identity {
  const { db, secretKey, ...rest } = deps;
  const service = createIdentityService({
    ...rest,
    repo: createIdentityRepo(db),
    mfaRepo: createMfaRepo(db),
    dataRightsRepo: createDataRightsRepo(db),
    webauthnRepo: createWebAuthnRepo(db),
    secrets: createSecretBox(secretKey, 'totp-secret'),
  });
  return {
    ...service,
    onDataExport: service.dataRights.onDataExport,
    onErasure: service.dataRights.onErasure,
    exportUserData: service.dataRights.exportUser,
    eraseUser: service.dataRights.eraseUser,
    name: 'identity',
    mfaEnabled: service.mfa.isEnabled,
    assertRecentMfa: (p, maxAgeSec) => service.mfa.assertRecentMfa(p.userId, p.sessionId, maxAgeSec),
    routes: [
      { name: 'identity', prefix: '/v1', plugin: asPlugin(identityRoutes(service)) },
      { name: 'identity-mfa', prefix: '/v1', plugin: asPlugin(mfaRoutes(service)) },
      { name: 'identity-webauthn', prefix: '/v1', plugin: asPlugin(webauthnRoutes(service)) },
      { name: 'identity-data-rights', prefix: '/v1', plugin: asPlugin(dataRightsRoutes(service)) },
    ],
    registerJobs: registerIdentityJobs,
  };
}
