import type { Transaction } from 'kysely';
import type { Logger } from 'pino';
import type { Database } from '../../platform/db/database.ts';
import type { Principal } from '../../platform/http/auth.ts';
import { newId } from '../../platform/ids.ts';
import type { Redis } from '../../platform/redis.ts';
import type { ResiliencePolicy } from '../../platform/resilience/policy.ts';
import { PLATFORM_AUDIT_TENANT, type Audit, type AuditContext } from '../audit/index.ts';
import { emailTaken, invalidCredentials, isUniqueViolation, sessionNotFound, userNotFound } from './identity.errors.ts';
import { checkPasswordPolicy, dummyPasswordHash, hashPassword, verifyPassword } from './identity.passwords.ts';
import { createSessionStore, type SessionMeta } from './identity.sessions.ts';
import { createLoginLockout, DEFAULT_LOCKOUT, type LockoutLimits } from './identity.lockout.ts';
import { AppError } from '../../platform/http/errors.ts';

export interface User {
  id: string;
  email: string;
  name: string;
  isPlatformAdmin: boolean;
  disabled: boolean;
  createdAt: Date;
}

export interface IdentityDeps {
  db: Database;
  redis?: Redis;
  /** The shared `redis` breaker (platform.policies.redis) every session-cache call goes through. */
  redisPolicy: ResiliencePolicy;
  redisPrefix: string;
  logger: Logger;
  audit: Audit;
  throttle?: Partial<LockoutLimits>;
}

export const normalizeEmail = (email: string) => email.trim().toLowerCase();

function toUser(r: Record<string, any>): User {
  return {
    id: r.id,
    email: r.email,
    name: r.name,
    isPlatformAdmin: Boolean(r.is_platform_admin),
    disabled: Boolean(r.disabled_at),
    createdAt: new Date(r.created_at),
  };
}

const USER_COLUMNS = ['id', 'email', 'name', 'is_platform_admin', 'disabled_at', 'created_at'] as const;

export function createIdentityService(deps: IdentityDeps) {
  const { db, audit } = deps;
  const sessions = createSessionStore({ db, redis: deps.redis, policy: deps.redisPolicy, prefix: deps.redisPrefix, logger: deps.logger });
  const throttle = createLoginLockout(db, { ...DEFAULT_LOCKOUT, ...deps.throttle });
  // Other modules' credentials of a disabled user (tenancy's API keys), revoked in the same transaction.
  const disableHooks: Array<(trx: Transaction<any>, userId: string, ctx: AuditContext) => Promise<void>> = [];
  // Started now so the first unknown-email login costs the same as the others.
  void dummyPasswordHash();

  /** Identity-level events (no org) are chained in the platform audit chain. */
  const inPlatformTx = <T>(fn: (trx: Transaction<any>) => Promise<T>) => db.withTenant(PLATFORM_AUDIT_TENANT, fn);

  async function getUser(id: string): Promise<User> {
    const row = await db.app.selectFrom('users').select(USER_COLUMNS).where('id', '=', id).executeTakeFirst();
    if (!row) throw userNotFound();
    return toUser(row);
  }

  return {
    sessions,
    getUser,

    async getUsers(ids: string[]): Promise<Map<string, User>> {
      if (ids.length === 0) return new Map();
      const rows = await db.app.selectFrom('users').select(USER_COLUMNS).where('id', 'in', ids).execute();
      return new Map(rows.map((r) => [r.id as string, toUser(r)]));
    },

    async findUserByEmail(email: string): Promise<User | null> {
      const row = await db.app.selectFrom('users').select(USER_COLUMNS).where('email', '=', normalizeEmail(email)).executeTakeFirst();
      return row ? toUser(row) : null;
    },

    /** Policy check + argon2id, outside any transaction (it takes tens of milliseconds). */
    async preparePassword(password: string, context: { email?: string; name?: string }): Promise<string> {
      checkPasswordPolicy(password, context);
      return hashPassword(password);
    },

    /** Inserts a user in the caller's transaction (signup runs it together with the first org). */
    async insertUser(trx: Transaction<any>, input: { email: string; name: string; passwordHash: string }): Promise<User> {
      const id = newId();
      try {
        const row = await trx
          .insertInto('users')
          .values({ id, email: normalizeEmail(input.email), name: input.name.trim(), password_hash: input.passwordHash })
          .returning(USER_COLUMNS)
          .executeTakeFirstOrThrow();
        return toUser(row);
      } catch (err) {
        if (isUniqueViolation(err)) throw emailTaken();
        throw err;
      }
    },

    async login(email: string, password: string, meta: SessionMeta & { requestId: string; ip: string }) {
      const accountKey = normalizeEmail(email);
      const reserved = await throttle.begin(accountKey, meta.ip);
      const row = await db.app
        .selectFrom('users')
        .select([...USER_COLUMNS, 'password_hash'])
        .where('email', '=', accountKey)
        .executeTakeFirst();
      // Same work whether or not the account exists: one argon2id verification.
      const ok = await verifyPassword(row?.password_hash ?? (await dummyPasswordHash()), password);
      if (!row || !ok || row.disabled_at) throw reserved.refusal ?? invalidCredentials();
      await throttle.succeeded(reserved);
      const user = toUser(row);
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

    async revokeSessions(principal: Principal, which: { sessionId?: string; exceptSessionId?: string }, ctx: AuditContext, action: string) {
      const hashes = await inPlatformTx(async (trx) => {
        const revoked = await sessions.revoke(trx, { userId: principal.userId, ...which });
        if (revoked.length > 0) {
          await audit.record(trx, {
            orgId: PLATFORM_AUDIT_TENANT,
            action,
            target: { type: which.sessionId ? 'session' : 'user', id: which.sessionId ?? principal.userId },
            changes: { revoked: revoked.length },
            context: ctx,
          });
        }
        return revoked;
      });
      if (which.sessionId && hashes.length === 0) throw sessionNotFound();
      await sessions.tombstone(hashes);
      return hashes.length;
    },

    /** Re-hashes, revokes every session of the user (all devices) and returns a fresh one for this client. */
    async changePassword(principal: Principal, current: string, next: string, meta: SessionMeta, ctx: AuditContext) {
      const row = await db.app.selectFrom('users').select(['email', 'name', 'password_hash']).where('id', '=', principal.userId).executeTakeFirst();
      if (!row) throw userNotFound();
      // Guessing the current password (e.g. with a stolen session) is throttled like a login.
      const reserved = await throttle.begin(normalizeEmail(row.email), meta.ip ?? 'unknown');
      if (!(await verifyPassword(row.password_hash, current))) {
        throw reserved.refusal ?? new AppError('IDENTITY.WRONG_PASSWORD', 403, 'The current password is incorrect');
      }
      await throttle.succeeded(reserved);
      checkPasswordPolicy(next, { email: row.email, name: row.name });
      const passwordHash = await hashPassword(next);
      const { revoked, session } = await inPlatformTx(async (trx) => {
        await trx.updateTable('users').set({ password_hash: passwordHash, password_changed_at: new Date(), updated_at: new Date() }).where('id', '=', principal.userId).execute();
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
      await sessions.tombstone(revoked);
      return session;
    },

    async setDisabled(userId: string, disabled: boolean, ctx: AuditContext): Promise<User> {
      const revoked = await inPlatformTx(async (trx) => {
        const res = await trx.updateTable('users').set({ disabled_at: disabled ? new Date() : null, updated_at: new Date() }).where('id', '=', userId).executeTakeFirst();
        if (Number(res.numUpdatedRows) === 0) throw userNotFound();
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
      await sessions.tombstone(revoked);
      return getUser(userId);
    },

    /** `plinth admin grant|revoke <email>`. */
    async setPlatformAdmin(email: string, value: boolean): Promise<User> {
      const userId = await inPlatformTx(async (trx) => {
        const row = await trx.updateTable('users').set({ is_platform_admin: value, updated_at: new Date() }).where('email', '=', normalizeEmail(email)).returning('id').executeTakeFirst();
        if (!row) throw userNotFound();
        await audit.record(trx, {
          orgId: PLATFORM_AUDIT_TENANT,
          action: value ? 'user.platform_admin_granted' : 'user.platform_admin_revoked',
          target: { type: 'user', id: row.id },
          changes: { isPlatformAdmin: { to: value } },
          context: { actor: { type: 'system', id: 'cli', userId: null } },
        });
        return row.id as string;
      });
      await sessions.forget(await sessions.activeHashes(userId));
      return getUser(userId);
    },

    onDisabled(hook: (trx: Transaction<any>, userId: string, ctx: AuditContext) => Promise<void>): void {
      disableHooks.push(hook);
    },

    /** For API keys: a key stops working when its creator is disabled. */
    async isActive(userId: string): Promise<boolean> {
      const row = await db.app.selectFrom('users').select('disabled_at').where('id', '=', userId).executeTakeFirst();
      return Boolean(row && !row.disabled_at);
    },
  };
}

export type IdentityService = ReturnType<typeof createIdentityService>;
