import { sql } from 'kysely';
import type { Database, DB, DbScope, TxHandle } from '../../platform/db/database.ts';

/** identity's WebAuthn tables (global, like users). */
export type WebAuthnTables = Pick<DB, 'webauthn_credentials' | 'webauthn_challenges'>;

export type ChallengePurpose = 'register' | 'second_factor' | 'step_up' | 'passwordless';

export interface CredentialRow {
  id: string;
  userId: string;
  credentialId: string;
  publicKey: Uint8Array<ArrayBuffer>;
  signCount: number;
  transports: string[];
  aaguid: string | null;
  deviceType: string;
  backedUp: boolean;
  name: string;
  createdAt: Date;
  lastUsedAt: Date | null;
}

export interface WebAuthnChallengeRow {
  id: string;
  purpose: ChallengePurpose;
  userId: string | null;
  mfaChallengeId: string | null;
  expiresAt: Date;
  consumedAt: Date | null;
}

const COLUMNS = ['id', 'user_id', 'credential_id', 'public_key', 'sign_count', 'transports', 'aaguid', 'device_type', 'backed_up', 'name', 'created_at', 'last_used_at'] as const;
type Record_ = {
  id: string;
  user_id: string;
  credential_id: string;
  public_key: Uint8Array;
  sign_count: number | string | bigint;
  transports: string[];
  aaguid: string | null;
  device_type: string;
  backed_up: boolean;
  name: string;
  created_at: Date | string;
  last_used_at: Date | string | null;
};
const toCredential = (r: Record_): CredentialRow => ({
  id: r.id,
  userId: r.user_id,
  credentialId: r.credential_id,
  publicKey: new Uint8Array(r.public_key),
  signCount: Number(r.sign_count),
  transports: r.transports ?? [],
  aaguid: r.aaguid,
  deviceType: r.device_type,
  backedUp: r.backed_up,
  name: r.name,
  createdAt: new Date(r.created_at),
  lastUsedAt: r.last_used_at ? new Date(r.last_used_at) : null,
});

/** Most credentials one user may register (allowCredentials lists them all). */
export const MAX_CREDENTIALS_PER_USER = 20;

/** All SQL of identity's WebAuthn credentials and challenges. */
export function createWebAuthnRepo(db: Database) {
  const scope: DbScope<WebAuthnTables> = db.scope('webauthn_credentials', 'webauthn_challenges');
  const { app } = scope;
  const tx = (h: TxHandle) => scope.join(h);

  return {
    async listByUser(userId: string, h?: TxHandle): Promise<CredentialRow[]> {
      const q = h ? tx(h) : app;
      const rows = await q.selectFrom('webauthn_credentials').select(COLUMNS).where('user_id', '=', userId).orderBy('created_at').orderBy('id').limit(MAX_CREDENTIALS_PER_USER).execute();
      return rows.map(toCredential);
    },

    async countByUser(userId: string, h?: TxHandle): Promise<number> {
      const q = h ? tx(h) : app;
      const r = await q.selectFrom('webauthn_credentials').select((eb) => eb.fn.countAll<string | number>().as('n')).where('user_id', '=', userId).executeTakeFirstOrThrow();
      return Number(r.n);
    },

    /** The credential with this WebAuthn id, locked for the rest of the transaction (one assertion at a time). */
    async lockByCredentialId(h: TxHandle, credentialId: string): Promise<CredentialRow | null> {
      const r = await tx(h).selectFrom('webauthn_credentials').select(COLUMNS).where('credential_id', '=', credentialId).forUpdate().executeTakeFirst();
      return r ? toCredential(r) : null;
    },

    async existsCredentialId(h: TxHandle, credentialId: string): Promise<boolean> {
      return Boolean(await tx(h).selectFrom('webauthn_credentials').select('id').where('credential_id', '=', credentialId).executeTakeFirst());
    },

    /** The user's credential with this row id (null for another user's or an unknown one). */
    async byId(userId: string, id: string, h?: TxHandle): Promise<CredentialRow | null> {
      const q = h ? tx(h) : app;
      const r = await q.selectFrom('webauthn_credentials').select(COLUMNS).where('id', '=', id).where('user_id', '=', userId).executeTakeFirst();
      return r ? toCredential(r) : null;
    },

    async insert(h: TxHandle, c: Omit<CredentialRow, 'createdAt' | 'lastUsedAt'>): Promise<CredentialRow> {
      const r = await tx(h)
        .insertInto('webauthn_credentials')
        .values({
          id: c.id,
          user_id: c.userId,
          credential_id: c.credentialId,
          public_key: Buffer.from(c.publicKey),
          sign_count: c.signCount,
          transports: c.transports,
          aaguid: c.aaguid,
          device_type: c.deviceType,
          backed_up: c.backedUp,
          name: c.name,
        })
        .returning(COLUMNS)
        .executeTakeFirstOrThrow();
      return toCredential(r);
    },

    async rename(h: TxHandle, userId: string, id: string, name: string): Promise<CredentialRow | null> {
      const r = await tx(h).updateTable('webauthn_credentials').set({ name }).where('id', '=', id).where('user_id', '=', userId).returning(COLUMNS).executeTakeFirst();
      return r ? toCredential(r) : null;
    },

    async remove(h: TxHandle, userId: string, id: string): Promise<boolean> {
      const r = await tx(h).deleteFrom('webauthn_credentials').where('id', '=', id).where('user_id', '=', userId).executeTakeFirst();
      return Number(r.numDeletedRows) > 0;
    },

    /** After a verified assertion: the authenticator's new counter and backup state. */
    async recordUse(h: TxHandle, id: string, signCount: number, backedUp: boolean): Promise<void> {
      await tx(h).updateTable('webauthn_credentials').set({ sign_count: signCount, backed_up: backedUp, last_used_at: new Date() }).where('id', '=', id).execute();
    },

    // ── challenges ──
    async insertChallenge(c: { id: string; challengeHash: string; purpose: ChallengePurpose; userId: string | null; mfaChallengeId: string | null; expiresAt: Date }): Promise<void> {
      await app
        .insertInto('webauthn_challenges')
        .values({ id: c.id, challenge_hash: c.challengeHash, purpose: c.purpose, user_id: c.userId, mfa_challenge_id: c.mfaChallengeId, expires_at: c.expiresAt })
        .execute();
    },

    /** The challenge, locked; the caller consumes it (whatever the verification's outcome). */
    async lockChallenge(h: TxHandle, challengeHash: string): Promise<WebAuthnChallengeRow | null> {
      const r = await tx(h)
        .selectFrom('webauthn_challenges')
        .select(['id', 'purpose', 'user_id', 'mfa_challenge_id', 'expires_at', 'consumed_at'])
        .where('challenge_hash', '=', challengeHash)
        .forUpdate()
        .executeTakeFirst();
      return r
        ? { id: r.id, purpose: r.purpose as ChallengePurpose, userId: r.user_id, mfaChallengeId: r.mfa_challenge_id, expiresAt: new Date(r.expires_at), consumedAt: r.consumed_at ? new Date(r.consumed_at) : null }
        : null;
    },

    async consumeChallenge(h: TxHandle, id: string): Promise<void> {
      await tx(h).updateTable('webauthn_challenges').set({ consumed_at: new Date() }).where('id', '=', id).execute();
    },

    /** Deletes up to 1,000 challenges that expired over an hour ago (called now and then by the writers). */
    async sweepChallenges(): Promise<number> {
      const r = await app
        .deleteFrom('webauthn_challenges')
        .where('id', 'in', (eb) => eb.selectFrom('webauthn_challenges').select('id').where('expires_at', '<', sql<Date>`now() - interval '1 hour'`).limit(1000))
        .executeTakeFirst();
      return Number(r.numDeletedRows);
    },
  };
}

export type WebAuthnRepo = ReturnType<typeof createWebAuthnRepo>;
