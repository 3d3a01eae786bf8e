import { sql } from 'kysely';
import type { Database, DB, DbScope, TxHandle } from '../../platform/db/database.ts';

/** identity's MFA tables (global, like users) and the session column that records a proved second factor. */
export type MfaTables = Pick<DB, 'user_mfa' | 'user_recovery_codes' | 'mfa_challenges' | 'sessions'>;

export interface MfaRow {
  secretCiphertext: string;
  enabledAt: Date | null;
  lastStep: number | null;
}

export interface ChallengeRow {
  id: string;
  userId: string;
  attempts: number;
  expiresAt: Date;
  consumedAt: Date | null;
}

type FactorRecord = { secret_ciphertext: string; enabled_at: Date | null; last_step: string | number | bigint | null };
const toFactor = (r: FactorRecord): MfaRow => ({
  secretCiphertext: r.secret_ciphertext,
  enabledAt: r.enabled_at ? new Date(r.enabled_at) : null,
  lastStep: r.last_step === null ? null : Number(r.last_step),
});
const FACTOR_COLUMNS = ['secret_ciphertext', 'enabled_at', 'last_step'] as const;

/** All SQL of identity's second factor (TOTP factor, recovery codes, login challenges). */
export function createMfaRepo(db: Database) {
  const scope: DbScope<MfaTables> = db.scope('user_mfa', 'user_recovery_codes', 'mfa_challenges', 'sessions');
  const { app } = scope;
  const tx = (h: TxHandle) => scope.join(h);

  return {
    async factor(userId: string): Promise<MfaRow | null> {
      const r = await app.selectFrom('user_mfa').select(FACTOR_COLUMNS).where('user_id', '=', userId).executeTakeFirst();
      return r ? toFactor(r) : null;
    },

    /** The factor, locked for the rest of the transaction (one code verification at a time per user). */
    async lockFactor(h: TxHandle, userId: string): Promise<MfaRow | null> {
      const r = await tx(h).selectFrom('user_mfa').select(FACTOR_COLUMNS).where('user_id', '=', userId).forUpdate().executeTakeFirst();
      return r ? toFactor(r) : null;
    },

    /** A new pending (not yet enabled) factor, replacing a pending one. */
    async upsertPending(h: TxHandle, userId: string, secretCiphertext: string): Promise<void> {
      await tx(h)
        .insertInto('user_mfa')
        .values({ user_id: userId, secret_ciphertext: secretCiphertext })
        .onConflict((oc) => oc.column('user_id').doUpdateSet({ secret_ciphertext: secretCiphertext, enabled_at: null, last_step: null, updated_at: new Date() }))
        .execute();
    },

    async enable(h: TxHandle, userId: string, step: number): Promise<void> {
      await tx(h).updateTable('user_mfa').set({ enabled_at: new Date(), last_step: step, updated_at: new Date() }).where('user_id', '=', userId).execute();
    },

    /** Records the time step a code was accepted at: that code (and older ones) never verify again. */
    async useStep(h: TxHandle, userId: string, step: number): Promise<void> {
      await tx(h).updateTable('user_mfa').set({ last_step: step, updated_at: new Date() }).where('user_id', '=', userId).execute();
    },

    /** Removes the TOTP factor and (unless another factor keeps them) the recovery codes. */
    async remove(h: TxHandle, userId: string, opts: { keepRecoveryCodes?: boolean } = {}): Promise<void> {
      if (!opts.keepRecoveryCodes) await tx(h).deleteFrom('user_recovery_codes').where('user_id', '=', userId).execute();
      await tx(h).deleteFrom('user_mfa').where('user_id', '=', userId).execute();
    },

    async removeRecoveryCodes(h: TxHandle, userId: string): Promise<void> {
      await tx(h).deleteFrom('user_recovery_codes').where('user_id', '=', userId).execute();
    },

    async replaceRecoveryCodes(h: TxHandle, userId: string, hashes: string[]): Promise<void> {
      await tx(h).deleteFrom('user_recovery_codes').where('user_id', '=', userId).execute();
      await tx(h).insertInto('user_recovery_codes').values(hashes.map((code_hash) => ({ user_id: userId, code_hash }))).execute();
    },

    /** Marks an unused code used; false when there is no such unused code. */
    async useRecoveryCode(h: TxHandle, userId: string, hash: string): Promise<boolean> {
      const r = await tx(h).updateTable('user_recovery_codes').set({ used_at: new Date() }).where('user_id', '=', userId).where('code_hash', '=', hash).where('used_at', 'is', null).executeTakeFirst();
      return Number(r.numUpdatedRows) > 0;
    },

    async unusedRecoveryCodes(userId: string): Promise<number> {
      const r = await app.selectFrom('user_recovery_codes').select((eb) => eb.fn.countAll<string | number>().as('n')).where('user_id', '=', userId).where('used_at', 'is', null).executeTakeFirstOrThrow();
      return Number(r.n);
    },

    // ── login challenges ──
    async insertChallenge(c: { id: string; userId: string; tokenHash: string; ip: string | null; userAgent: string | null; expiresAt: Date }): Promise<void> {
      await app.insertInto('mfa_challenges').values({ id: c.id, user_id: c.userId, token_hash: c.tokenHash, ip: c.ip, user_agent: c.userAgent, expires_at: c.expiresAt }).execute();
    },

    async lockChallenge(h: TxHandle, tokenHash: string): Promise<ChallengeRow | null> {
      const r = await tx(h).selectFrom('mfa_challenges').select(['id', 'user_id', 'attempts', 'expires_at', 'consumed_at']).where('token_hash', '=', tokenHash).forUpdate().executeTakeFirst();
      return r ? { id: r.id, userId: r.user_id, attempts: r.attempts, expiresAt: new Date(r.expires_at), consumedAt: r.consumed_at } : null;
    },

    async failChallenge(id: string): Promise<void> {
      await app.updateTable('mfa_challenges').set({ attempts: sql<number>`attempts + 1` }).where('id', '=', id).execute();
    },

    async consumeChallenge(h: TxHandle, id: string): Promise<void> {
      await tx(h).updateTable('mfa_challenges').set({ consumed_at: new Date() }).where('id', '=', id).execute();
    },

    // ── step-up ──
    async markSessionMfa(h: TxHandle, sessionId: string): Promise<void> {
      await tx(h).updateTable('sessions').set({ mfa_at: new Date() }).where('id', '=', sessionId).execute();
    },

    async sessionMfaAt(sessionId: string): Promise<Date | null> {
      const r = await app.selectFrom('sessions').select('mfa_at').where('id', '=', sessionId).executeTakeFirst();
      return r?.mfa_at ? new Date(r.mfa_at) : null;
    },
  };
}

export type MfaRepo = ReturnType<typeof createMfaRepo>;
