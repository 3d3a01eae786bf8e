import { sql, type Selectable, type Transaction } from 'kysely';
import type { Database, DB, DbScope, TxHandle } from '../../platform/db/database.ts';
import { isUniqueViolation } from '../../platform/db/constraint-errors.ts';
import { emailTaken } from './identity.errors.ts';

/** The tables identity owns; all global (a user belongs to many orgs), none tenant-owned. */
export type IdentityTables = Pick<DB, 'users' | 'sessions' | 'login_attempts'>;
export type IdentityTx = Transaction<IdentityTables>;

export interface User {
  id: string;
  email: string;
  name: string;
  isPlatformAdmin: boolean;
  disabled: boolean;
  createdAt: Date;
}

export interface SessionInfo {
  id: string;
  ip: string | null;
  userAgent: string | null;
  createdAt: Date;
  lastUsedAt: Date;
  expiresAt: Date;
}

/** What authenticating a session token needs: the session and its user's standing. */
export interface SessionAuthRow {
  id: string;
  userId: string;
  expiresAt: Date;
  revokedAt: Date | null;
  lastUsedAt: Date;
  userDisabledAt: Date | null;
  isPlatformAdmin: boolean;
}

const USER_COLUMNS = ['id', 'email', 'name', 'is_platform_admin', 'disabled_at', 'created_at'] as const;
type UserRow = Pick<Selectable<IdentityTables['users']>, (typeof USER_COLUMNS)[number]>;

const toUser = (r: UserRow): User => ({
  id: r.id,
  email: r.email,
  name: r.name,
  isPlatformAdmin: Boolean(r.is_platform_admin),
  disabled: Boolean(r.disabled_at),
  createdAt: new Date(r.created_at),
});

/** All SQL of the identity module (users, sessions, login attempts). */
export function createIdentityRepo(db: Database) {
  const scope: DbScope<IdentityTables> = db.scope('users', 'sessions', 'login_attempts');
  const { app } = scope;

  async function revokeSessions(trx: IdentityTx, where: { userId: string; sessionId?: string; exceptSessionId?: string }): Promise<string[]> {
    let q = trx.updateTable('sessions').set({ revoked_at: new Date() }).where('user_id', '=', where.userId).where('revoked_at', 'is', null);
    if (where.sessionId) q = q.where('id', '=', where.sessionId);
    if (where.exceptSessionId) q = q.where('id', '!=', where.exceptSessionId);
    const rows = await q.returning('token_hash').execute();
    return rows.map((r) => r.token_hash);
  }

  return {
    /** Runs fn in a transaction of another tenant context (identity's audit events go to the platform chain). */
    inTenant: <R>(tenantId: string, fn: (trx: IdentityTx) => Promise<R>) => scope.withTenant(tenantId, fn),

    // ── users ──
    async userById(id: string): Promise<User | null> {
      const row = await app.selectFrom('users').select(USER_COLUMNS).where('id', '=', id).executeTakeFirst();
      return row ? toUser(row) : null;
    },

    /** With `handle`, in the caller's transaction (a job's: the embedded database has one connection). */
    async usersByIds(ids: string[], handle?: TxHandle): Promise<User[]> {
      if (ids.length === 0) return [];
      const rows = await (handle ? scope.join(handle) : app).selectFrom('users').select(USER_COLUMNS).where('id', 'in', ids).execute();
      return rows.map(toUser);
    },

    async userByEmail(email: string): Promise<User | null> {
      const row = await app.selectFrom('users').select(USER_COLUMNS).where('email', '=', email).executeTakeFirst();
      return row ? toUser(row) : null;
    },

    /** The user and their password hash, for a sign-in or a password change. */
    async credentialsByEmail(email: string): Promise<{ user: User; passwordHash: string; disabled: boolean } | null> {
      const row = await app.selectFrom('users').select([...USER_COLUMNS, 'password_hash']).where('email', '=', email).executeTakeFirst();
      return row ? { user: toUser(row), passwordHash: row.password_hash, disabled: Boolean(row.disabled_at) } : null;
    },

    async credentialsById(id: string): Promise<{ email: string; name: string; passwordHash: string } | null> {
      const row = await app.selectFrom('users').select(['email', 'name', 'password_hash']).where('id', '=', id).executeTakeFirst();
      return row ? { email: row.email, name: row.name, passwordHash: row.password_hash } : null;
    },

    /** Inserts a user in the caller's transaction; a taken email is 409 IDENTITY.EMAIL_TAKEN. */
    async insertUser(handle: TxHandle, input: { id: string; email: string; name: string; passwordHash: string }): Promise<User> {
      try {
        const row = await scope
          .join(handle)
          .insertInto('users')
          .values({ id: input.id, email: input.email, name: input.name, password_hash: input.passwordHash })
          .returning(USER_COLUMNS)
          .executeTakeFirstOrThrow();
        return toUser(row);
      } catch (err) {
        if (isUniqueViolation(err)) throw emailTaken();
        throw err;
      }
    },

    async setPassword(trx: IdentityTx, userId: string, passwordHash: string): Promise<void> {
      const now = new Date();
      await trx.updateTable('users').set({ password_hash: passwordHash, password_changed_at: now, updated_at: now }).where('id', '=', userId).execute();
    },

    /** false when there is no such user. */
    async setDisabled(trx: IdentityTx, userId: string, disabled: boolean): Promise<boolean> {
      const res = await trx.updateTable('users').set({ disabled_at: disabled ? new Date() : null, updated_at: new Date() }).where('id', '=', userId).executeTakeFirst();
      return Number(res.numUpdatedRows) > 0;
    },

    /** The user's id, or null when no user has that email. */
    async setPlatformAdmin(trx: IdentityTx, email: string, value: boolean): Promise<string | null> {
      const row = await trx.updateTable('users').set({ is_platform_admin: value, updated_at: new Date() }).where('email', '=', email).returning('id').executeTakeFirst();
      return row?.id ?? null;
    },

    async disabledAt(userId: string): Promise<{ disabledAt: Date | null } | null> {
      const row = await app.selectFrom('users').select('disabled_at').where('id', '=', userId).executeTakeFirst();
      return row ? { disabledAt: row.disabled_at } : null;
    },

    // ── sessions ──
    async insertSession(
      handle: TxHandle,
      s: { id: string; userId: string; tokenHash: string; ip: string | null; userAgent: string | null; expiresAt: Date },
    ): Promise<void> {
      await scope
        .join(handle)
        .insertInto('sessions')
        .values({ id: s.id, user_id: s.userId, token_hash: s.tokenHash, ip: s.ip, user_agent: s.userAgent, expires_at: s.expiresAt })
        .execute();
    },

    async sessionByTokenHash(tokenHash: string): Promise<SessionAuthRow | null> {
      const row = await app
        .selectFrom('sessions as s')
        .innerJoin('users as u', 'u.id', 's.user_id')
        .select(['s.id', 's.user_id', 's.expires_at', 's.revoked_at', 's.last_used_at', 'u.disabled_at', 'u.is_platform_admin'])
        .where('s.token_hash', '=', tokenHash)
        .executeTakeFirst();
      if (!row) return null;
      return {
        id: row.id,
        userId: row.user_id,
        expiresAt: new Date(row.expires_at),
        revokedAt: row.revoked_at,
        lastUsedAt: new Date(row.last_used_at),
        userDisabledAt: row.disabled_at,
        isPlatformAdmin: row.is_platform_admin,
      };
    },

    async touchSession(id: string): Promise<void> {
      await app.updateTable('sessions').set({ last_used_at: new Date() }).where('id', '=', id).execute();
    },

    /** Marks sessions revoked in the caller's transaction; returns their token hashes. */
    revokeSessions,

    async activeSessionHashes(userId: string): Promise<string[]> {
      const rows = await app.selectFrom('sessions').select('token_hash').where('user_id', '=', userId).where('revoked_at', 'is', null).execute();
      return rows.map((r) => r.token_hash);
    },

    /** Active sessions, newest first, at most 100. */
    async activeSessions(userId: string): Promise<SessionInfo[]> {
      const rows = await app
        .selectFrom('sessions')
        .select(['id', 'ip', 'user_agent', 'created_at', 'last_used_at', 'expires_at'])
        .where('user_id', '=', userId)
        .where('revoked_at', 'is', null)
        .where('expires_at', '>', new Date())
        .orderBy('created_at', 'desc')
        .limit(100)
        .execute();
      return rows.map((r) => ({
        id: r.id,
        ip: r.ip ?? null,
        userAgent: r.user_agent ?? null,
        createdAt: new Date(r.created_at),
        lastUsedAt: new Date(r.last_used_at),
        expiresAt: new Date(r.expires_at),
      }));
    },

    // ── login attempts (throttle) ──
    /** Runs fn in one app-role transaction (no tenant context: login_attempts is global). */
    inAppTransaction: <R>(fn: (trx: IdentityTx) => Promise<R>) => app.transaction().execute(fn),

    /**
     * Takes the key's advisory lock for the rest of the transaction, drops its attempts older than an
     * hour, and counts the rest.
     */
    async lockAndCountAttempts(trx: IdentityTx, scopeName: string, key: string): Promise<{ n: number; oldest: Date | null; newest: Date | null }> {
      await sql`select pg_advisory_xact_lock(hashtext(${`login:${scopeName}:${key}`}))`.execute(trx);
      await trx.deleteFrom('login_attempts').where('scope', '=', scopeName).where('key', '=', key).where('attempted_at', '<', sql<Date>`now() - interval '1 hour'`).execute();
      const row = await trx
        .selectFrom('login_attempts')
        .select((eb) => [eb.fn.countAll<number | string>().as('n'), eb.fn.min('attempted_at').as('oldest'), eb.fn.max('attempted_at').as('newest')])
        .where('scope', '=', scopeName)
        .where('key', '=', key)
        .executeTakeFirstOrThrow();
      return { n: Number(row.n), oldest: row.oldest ? new Date(row.oldest) : null, newest: row.newest ? new Date(row.newest) : null };
    },

    /** Has this account signed in from this IP before? (sessions keep the client IP, revoked or not) */
    async signedInFrom(trx: IdentityTx, email: string, ip: string): Promise<boolean> {
      const row = await trx
        .selectFrom('sessions as s')
        .innerJoin('users as u', 'u.id', 's.user_id')
        .select('s.id')
        .where('u.email', '=', email)
        .where('s.ip', '=', ip.slice(0, 64))
        .limit(1)
        .executeTakeFirst();
      return row !== undefined;
    },

    /** Deletes up to 1,000 attempts older than an hour (keys that are never tried again). */
    async sweepAttempts(trx: IdentityTx): Promise<void> {
      await trx
        .deleteFrom('login_attempts')
        .where('id', 'in', (eb) => eb.selectFrom('login_attempts').select('id').where('attempted_at', '<', sql<Date>`now() - interval '1 hour'`).limit(1000))
        .execute();
    },

    async insertAttempts(trx: IdentityTx, rows: Array<{ id: string; scope: string; key: string }>): Promise<void> {
      await trx.insertInto('login_attempts').values(rows).execute();
    },

    async deleteAttempts(ids: string[]): Promise<void> {
      await app.deleteFrom('login_attempts').where('id', 'in', ids).execute();
    },
  };
}

export type IdentityRepo = ReturnType<typeof createIdentityRepo>;
