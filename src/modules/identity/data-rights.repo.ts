import { sql, type Transaction } from 'kysely';
import type { Database, DB, DbScope, TxHandle } from '../../platform/db/database.ts';

/** Every table identity keeps personal data in (data-subject export and erasure). */
export type DataRightsTables = Pick<DB, 'users' | 'sessions' | 'login_attempts' | 'user_mfa' | 'user_recovery_codes' | 'mfa_challenges' | 'webauthn_credentials' | 'webauthn_challenges'>;

const iso = (d: Date | string | null) => (d === null ? null : new Date(d).toISOString());

/** The SQL of identity's part of GDPR art. 15 (export) and art. 17 (erasure). */
export function createDataRightsRepo(db: Database) {
  const scope: DbScope<DataRightsTables> = db.scope('users', 'sessions', 'login_attempts', 'user_mfa', 'user_recovery_codes', 'mfa_challenges', 'webauthn_credentials', 'webauthn_challenges');

  return {
    /** Everything identity holds about the user, secrets excluded (password hash, TOTP secret, token hashes, passkey public keys). */
    async exportUser(userId: string) {
      const app = scope.app;
      const user = await app
        .selectFrom('users')
        .select(['id', 'email', 'name', 'is_platform_admin', 'disabled_at', 'erased_at', 'created_at', 'updated_at', 'password_changed_at'])
        .where('id', '=', userId)
        .executeTakeFirst();
      if (!user) return null;
      const sessions = await app
        .selectFrom('sessions')
        .select(['id', 'ip', 'user_agent', 'created_at', 'last_used_at', 'expires_at', 'revoked_at', 'mfa_at'])
        .where('user_id', '=', userId)
        .orderBy('created_at')
        .execute();
      const mfa = await app.selectFrom('user_mfa').select(['created_at', 'enabled_at']).where('user_id', '=', userId).executeTakeFirst();
      const codes = await app
        .selectFrom('user_recovery_codes')
        .select([sql<number>`count(*)::int`.as('total'), sql<number>`count(used_at)::int`.as('used')])
        .where('user_id', '=', userId)
        .executeTakeFirstOrThrow();
      const passkeys = await app
        .selectFrom('webauthn_credentials')
        .select(['id', 'credential_id', 'name', 'aaguid', 'device_type', 'backed_up', 'transports', 'created_at', 'last_used_at'])
        .where('user_id', '=', userId)
        .orderBy('created_at')
        .execute();
      return {
        account: {
          id: user.id,
          email: user.email,
          name: user.name,
          isPlatformAdmin: user.is_platform_admin,
          createdAt: iso(user.created_at),
          updatedAt: iso(user.updated_at),
          passwordChangedAt: iso(user.password_changed_at),
          disabledAt: iso(user.disabled_at),
          erasedAt: iso(user.erased_at),
        },
        sessions: sessions.map((s) => ({
          id: s.id,
          ip: s.ip,
          userAgent: s.user_agent,
          createdAt: iso(s.created_at),
          lastUsedAt: iso(s.last_used_at),
          expiresAt: iso(s.expires_at),
          revokedAt: iso(s.revoked_at),
          secondFactorAt: iso(s.mfa_at),
        })),
        mfa: {
          totp: mfa ? { enrolledAt: iso(mfa.created_at), enabledAt: iso(mfa.enabled_at) } : null,
          recoveryCodes: { total: codes.total, used: codes.used },
          passkeys: passkeys.map((p) => ({
            id: p.id,
            credentialId: p.credential_id,
            name: p.name,
            aaguid: p.aaguid,
            deviceType: p.device_type,
            backedUp: p.backed_up,
            transports: p.transports,
            createdAt: iso(p.created_at),
            lastUsedAt: iso(p.last_used_at),
          })),
        },
      };
    },

    /** The user's e-mail address (null for an unknown or already erased user). */
    async liveEmail(userId: string): Promise<string | null> {
      const row = await scope.app.selectFrom('users').select(['email', 'erased_at']).where('id', '=', userId).executeTakeFirst();
      return row && row.erased_at === null ? row.email : null;
    },

    /**
     * Erases the account in the caller's transaction: the row stays (other modules refer to its id) with
     * placeholder values, disabled, no usable password; sessions are revoked and stripped of IP and user
     * agent; second factors (TOTP, passkeys) and recovery codes go, pending challenges end; the login throttle rows of the address
     * go. Returns the revoked sessions' token hashes (to drop from every instance's cache), or null when
     * the user does not exist.
     */
    async eraseUser(handle: TxHandle, userId: string, email: string, unusablePassword: string): Promise<string[] | null> {
      const trx: Transaction<DataRightsTables> = scope.join(handle);
      const user = await trx
        .updateTable('users')
        .set({
          email: `erased-${userId}@erased.invalid`,
          name: 'Erased user',
          password_hash: unusablePassword,
          is_platform_admin: false,
          disabled_at: sql<Date>`coalesce(disabled_at, now())`,
          erased_at: sql<Date>`now()`,
          updated_at: sql<Date>`now()`,
        })
        .where('id', '=', userId)
        .returning('id')
        .executeTakeFirst();
      if (!user) return null;
      const live = await trx.selectFrom('sessions').select('token_hash').where('user_id', '=', userId).where('revoked_at', 'is', null).execute();
      await trx
        .updateTable('sessions')
        .set({ ip: null, user_agent: null, revoked_at: sql<Date>`coalesce(revoked_at, now())` })
        .where('user_id', '=', userId)
        .execute();
      // The app role may not delete challenges (they expire): consumed, and stripped of where they came from.
      await trx
        .updateTable('mfa_challenges')
        .set({ ip: null, user_agent: null, consumed_at: sql<Date>`coalesce(consumed_at, now())` })
        .where('user_id', '=', userId)
        .execute();
      await trx.deleteFrom('user_recovery_codes').where('user_id', '=', userId).execute();
      await trx.deleteFrom('user_mfa').where('user_id', '=', userId).execute();
      await trx.deleteFrom('webauthn_credentials').where('user_id', '=', userId).execute();
      await trx.deleteFrom('webauthn_challenges').where('user_id', '=', userId).execute();
      // Throttle keys are the address, the address and an IP, or an IP alone (not the user's alone: kept).
      await trx
        .deleteFrom('login_attempts')
        .where((w) => w.or([w.and([w('scope', '=', 'account'), w('key', '=', email)]), w.and([w('scope', '=', 'account_ip'), w('key', 'like', `${email.replace(/[\\%_]/g, '\\$&')} %`)])]))
        .execute();
      return live.map((s) => s.token_hash);
    },
  };
}

export type DataRightsRepo = ReturnType<typeof createDataRightsRepo>;
