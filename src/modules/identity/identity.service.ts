import type { Logger } from 'pino';
import type { TxHandle } from '../../platform/db/database.ts';
import { systemActor, type ActorContext } from '../../platform/http/actor.ts';
import type { Principal } from '../../platform/http/auth.ts';
import { newId } from '../../platform/ids.ts';
import type { InvalidationBus } from '../../platform/cache/invalidation-bus.ts';
import { PLATFORM_AUDIT_TENANT, type Audit } from '../audit/index.ts';
import { invalidCredentials, sessionNotFound, userNotFound, wrongPassword } from './identity.errors.ts';
import { checkPasswordPolicy, dummyPasswordHash, hashPassword, verifyPassword } from './identity.passwords.ts';
import type { IdentityRepo, IdentityTx, SessionInfo, User } from './identity.repo.ts';
import { createSessionStore, type NewSession, type SessionMeta } from './identity.sessions.ts';
import { createLoginLockout, type LockoutLimits } from './identity.lockout.ts';
import { createMfa, type FactorKind } from './identity.mfa.ts';
import type { MfaRepo } from './mfa.repo.ts';
import type { CacheProvider } from '../../platform/cache/cache.ts';
import type { SecretBox } from '../../platform/crypto/secret-box.ts';
import type { EventPublisher } from '../../platform/outbox/publisher.ts';
import type { ObjectStorage } from '../../platform/storage/index.ts';
import type { DataRightsRepo } from './data-rights.repo.ts';
import { createDataRights } from './identity.data-rights.ts';
import { createWebAuthnCore, type WebAuthnSettings } from './identity.webauthn.ts';
import { createPasskeys } from './identity.passkeys.ts';
import type { WebAuthnRepo } from './webauthn.repo.ts';

export interface IdentityServiceDeps {
  repo: IdentityRepo;
  audit: Audit;
  /** Cross-process invalidation of the per-process session cache (platform.invalidations). */
  invalidations: InvalidationBus;
  /** Longest a cached session is served without Postgres (CACHE_L1_TTL_MS): the bound when an invalidation is lost. */
  sessionCacheMaxAgeMs: number;
  logger: Logger;
  throttle: LockoutLimits;
  /** MFA: its tables, the box TOTP secrets are sealed in, and the cache of "has MFA" (read per org request). */
  mfaRepo: MfaRepo;
  secrets: SecretBox;
  cache: CacheProvider;
  /** Data rights: the outbox (identity.user_erased), file storage for exports, identity's personal-data SQL. */
  events: EventPublisher;
  storage: ObjectStorage;
  dataRightsRepo: DataRightsRepo;
  /** WebAuthn / passkeys: the relying party (config) and the credential and challenge tables. */
  webauthn: WebAuthnSettings;
  webauthnRepo: WebAuthnRepo;
}

/** A password sign-in either opens a session, or (second factor enrolled) hands out a challenge for it. */
export type LoginResult = (NewSession & { user: User; mfaRequired?: false }) | { mfaRequired: true; mfaToken: string; expiresAt: Date; factors: FactorKind[] };

export const normalizeEmail = (email: string) => email.trim().toLowerCase();

/** Where a request comes from, for a new session and its audit event. */
export interface RequestMeta {
  ip: string;
  userAgent: string | null;
  requestId: string;
}

/** Checked before a password is used to sign in or to open a session (sso: enforced domains); throws to refuse. */
export type PasswordGuard = (email: string) => Promise<void>;

/** Stored for accounts created by SSO: not an argon2 hash, so no password ever verifies against it. */
const NO_PASSWORD = '!external';

/** Called inside the disabling transaction (platform tenant context), before it commits. */
export type DisableHook = (trx: TxHandle, userId: string, ctx: ActorContext) => Promise<void>;

export function createIdentityService(deps: IdentityServiceDeps) {
  const { repo, audit } = deps;
  const sessions = createSessionStore({ repo, invalidations: deps.invalidations, cacheMaxAgeMs: deps.sessionCacheMaxAgeMs });
  const throttle = createLoginLockout(repo, deps.throttle);
  // Other modules' credentials of a disabled user (tenancy's API keys), revoked in the same transaction.
  const disableHooks: DisableHook[] = [];
  const passwordGuards: PasswordGuard[] = [];
  const checkPasswordUse = async (email: string) => {
    for (const guard of passwordGuards) await guard(normalizeEmail(email));
  };
  // Started now so the first unknown-email login costs the same as the others.
  void dummyPasswordHash();

  /** Identity-level events (no org) are chained in the platform audit chain. */
  const inPlatformTx = <T>(fn: (trx: IdentityTx) => Promise<T>) => repo.inTenant(PLATFORM_AUDIT_TENANT, fn);
  const webauthn = createWebAuthnCore({ repo: deps.webauthnRepo, audit, settings: deps.webauthn });
  const mfa = createMfa({
    repo: deps.mfaRepo,
    audit,
    sessions,
    throttle,
    secrets: deps.secrets,
    cache: deps.cache,
    inPlatformTx,
    emailOf: async (userId) => normalizeEmail((await getUser(userId)).email),
    webauthn,
    webauthnRepo: deps.webauthnRepo,
  });
  const passkeys = createPasskeys({
    core: webauthn,
    repo: deps.webauthnRepo,
    mfaRepo: deps.mfaRepo,
    mfa,
    audit,
    sessions,
    inPlatformTx,
    getUser: (id) => getUser(id),
    checkLocalSignIn: (email) => checkPasswordUse(email),
  });

  const dataRights = createDataRights({
    repo: deps.dataRightsRepo,
    audit,
    events: deps.events,
    storage: deps.storage,
    cache: deps.cache,
    inPlatformTx,
    invalidateSessions: (hashes) => sessions.invalidate(hashes),
    unusablePassword: NO_PASSWORD,
    // An erased user is disabled too: what disabling revokes elsewhere (tenancy's API keys) goes as well.
    erasureHooks: disableHooks,
  });

  async function getUser(id: string): Promise<User> {
    const user = await repo.userById(id);
    if (!user) throw userNotFound();
    return user;
  }

  async function revokeSessions(userId: string, which: { sessionId?: string; exceptSessionId?: string }, ctx: ActorContext, action: string) {
    const hashes = await inPlatformTx(async (trx) => {
      const revoked = await sessions.revoke(trx, { userId, ...which });
      if (revoked.length > 0) {
        await audit.record(trx, {
          orgId: PLATFORM_AUDIT_TENANT,
          action,
          target: { type: which.sessionId ? 'session' : 'user', id: which.sessionId ?? userId },
          changes: { revoked: revoked.length },
          context: ctx,
        });
      }
      return revoked;
    });
    if (which.sessionId && hashes.length === 0) throw sessionNotFound();
    await sessions.invalidate(hashes);
    return hashes.length;
  }

  return {
    getUser,
    dataRights,

    async getUsers(ids: string[], trx?: TxHandle): Promise<Map<string, User>> {
      return new Map((await repo.usersByIds(ids, trx)).map((u) => [u.id, u]));
    },

    async findUserByEmail(email: string): Promise<User | null> {
      return repo.userByEmail(normalizeEmail(email));
    },

    /** For API keys: a key stops working when its creator is disabled. */
    async isActive(userId: string): Promise<boolean> {
      const row = await repo.disabledAt(userId);
      return Boolean(row && !row.disabledAt);
    },

    /** Policy check + argon2id, outside any transaction (it takes tens of milliseconds). */
    async preparePassword(password: string, context: { email?: string; name?: string }): Promise<string> {
      if (context.email) await checkPasswordUse(context.email);
      checkPasswordPolicy(password, context);
      return hashPassword(password);
    },

    /** Creates a user in the caller's transaction (signup runs it together with the first org). */
    async createUser(trx: TxHandle, input: { email: string; name: string; passwordHash: string }): Promise<User> {
      return repo.insertUser(trx, { id: newId(), email: normalizeEmail(input.email), name: input.name.trim(), passwordHash: input.passwordHash });
    },

    /** A user who signs in only through an IdP (SSO just-in-time provisioning), in the caller's transaction. */
    async createExternalUser(trx: TxHandle, input: { email: string; name: string }): Promise<User> {
      return repo.insertUser(trx, { id: newId(), email: normalizeEmail(input.email), name: input.name.trim(), passwordHash: NO_PASSWORD });
    },

    /** Opens a session for the user in the caller's transaction (signup's first session). */
    startSession(trx: TxHandle, userId: string, meta: SessionMeta): Promise<NewSession> {
      return sessions.create(trx, userId, meta);
    },

    /** A `pls_…` bearer token → the user's principal, or null (unknown, expired, revoked, disabled). */
    authenticateSession: sessions.authenticate,

    mfa,
    passkeys,

    async login(email: string, password: string, meta: RequestMeta): Promise<LoginResult> {
      const accountKey = normalizeEmail(email);
      await checkPasswordUse(accountKey);
      const reserved = await throttle.begin(accountKey, meta.ip);
      const found = await repo.credentialsByEmail(accountKey);
      // Same work whether or not the account exists: one argon2id verification.
      const ok = await verifyPassword(found?.passwordHash ?? (await dummyPasswordHash()), password);
      if (!found || !ok || found.disabled) throw reserved.refusal ?? invalidCredentials();
      await throttle.succeeded(reserved);
      const { user } = found;
      if (await mfa.isEnabled(user.id)) return { mfaRequired: true, ...(await mfa.challenge(user.id, meta)) };
      const session = await inPlatformTx(async (trx) => {
        const s = await sessions.create(trx, user.id, meta);
        await audit.record(trx, {
          orgId: PLATFORM_AUDIT_TENANT,
          action: 'session.created',
          target: { type: 'session', id: s.sessionId },
          context: { actor: { type: 'user', id: user.id, userId: user.id }, requestId: meta.requestId, ip: meta.ip },
        });
        return s;
      });
      return { user, ...session };
    },

    logout: (p: Principal & { sessionId: string }, ctx: ActorContext) => revokeSessions(p.userId, { sessionId: p.sessionId }, ctx, 'session.revoked'),

    /** Revokes one of the user's sessions (404 when it is not theirs or already revoked). */
    revokeSession: (p: Principal, sessionId: string, ctx: ActorContext) => revokeSessions(p.userId, { sessionId }, ctx, 'session.revoked'),

    /** Signs out everywhere else; returns how many sessions were revoked. */
    revokeOtherSessions: (p: Principal & { sessionId: string }, ctx: ActorContext) =>
      revokeSessions(p.userId, { exceptSessionId: p.sessionId }, ctx, 'session.revoked_others'),

    /** Deprovisioning (directory sync): every session of the user ends, on every instance. */
    revokeAllSessions: (userId: string, ctx: ActorContext) => revokeSessions(userId, {}, ctx, 'session.revoked_all'),

    /** The user's active sessions, newest first (at most 100). */
    listSessions: (userId: string): Promise<SessionInfo[]> => sessions.list(userId),

    /** Re-hashes, revokes every session of the user (all devices) and returns a fresh one for this client. */
    async changePassword(principal: Principal, current: string, next: string, meta: SessionMeta, ctx: ActorContext): Promise<NewSession> {
      const row = await repo.credentialsById(principal.userId);
      if (!row) throw userNotFound();
      await checkPasswordUse(row.email);
      // Guessing the current password (e.g. with a stolen session) is throttled like a login.
      const reserved = await throttle.begin(normalizeEmail(row.email), meta.ip ?? 'unknown');
      if (!(await verifyPassword(row.passwordHash, current))) throw reserved.refusal ?? wrongPassword();
      await throttle.succeeded(reserved);
      checkPasswordPolicy(next, { email: row.email, name: row.name });
      const passwordHash = await hashPassword(next);
      const { revoked, session } = await inPlatformTx(async (trx) => {
        await repo.setPassword(trx, principal.userId, passwordHash);
        const revoked = await sessions.revoke(trx, { userId: principal.userId });
        const session = await sessions.create(trx, principal.userId, meta);
        await audit.record(trx, {
          orgId: PLATFORM_AUDIT_TENANT,
          action: 'user.password_changed',
          target: { type: 'user', id: principal.userId },
          changes: { password: 'changed', sessionsRevoked: revoked.length },
          context: ctx,
        });
        return { revoked, session };
      });
      await sessions.invalidate(revoked);
      return session;
    },

    async setDisabled(userId: string, disabled: boolean, ctx: ActorContext): Promise<User> {
      const revoked = await inPlatformTx(async (trx) => {
        if (!(await repo.setDisabled(trx, userId, disabled))) throw userNotFound();
        const revoked = disabled ? await sessions.revoke(trx, { userId }) : [];
        if (disabled) for (const hook of disableHooks) await hook(trx, userId, ctx);
        await audit.record(trx, {
          orgId: PLATFORM_AUDIT_TENANT,
          action: disabled ? 'user.disabled' : 'user.enabled',
          target: { type: 'user', id: userId },
          changes: { disabled: { to: disabled }, ...(disabled ? { sessionsRevoked: revoked.length } : {}) },
          context: ctx,
        });
        return revoked;
      });
      await sessions.invalidate(revoked);
      return getUser(userId);
    },

    /**
     * Registers work another module must do, in the same transaction, when a user is disabled (tenancy
     * revokes the user's API keys in every org). The transaction is handed over as a TxHandle.
     */
    onDisabled(hook: DisableHook): void {
      disableHooks.push(hook);
    },

    /** Registers a check run before any password sign-in or password session (sso's enforced domains). */
    onPasswordUse(guard: PasswordGuard): void {
      passwordGuards.push(guard);
    },

    /** `plinth admin grant|revoke <email>`. */
    async setPlatformAdmin(email: string, value: boolean): Promise<User> {
      const userId = await inPlatformTx(async (trx) => {
        const id = await repo.setPlatformAdmin(trx, normalizeEmail(email), value);
        if (!id) throw userNotFound();
        await audit.record(trx, {
          orgId: PLATFORM_AUDIT_TENANT,
          action: value ? 'user.platform_admin_granted' : 'user.platform_admin_revoked',
          target: { type: 'user', id },
          changes: { isPlatformAdmin: { to: value } },
          context: systemActor('cli'),
        });
        return id;
      });
      await sessions.invalidate(await sessions.activeHashes(userId));
      return getUser(userId);
    },
  };
}

export type IdentityService = ReturnType<typeof createIdentityService>;
