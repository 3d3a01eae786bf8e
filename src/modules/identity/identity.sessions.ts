import type { TxHandle } from '../../platform/db/database.ts';
import type { Principal } from '../../platform/http/auth.ts';
import { newId } from '../../platform/ids.ts';
import type { InvalidationBus } from '../../platform/cache/invalidation-bus.ts';
import { createLocalCache } from '../../platform/cache/local-cache.ts';
import type { IdentityRepo } from './identity.repo.ts';
import { newSecret, sha256Hex } from './identity.tokens.ts';

export const SESSION_PREFIX = 'pls_';
export const SESSION_TTL_MS = 30 * 24 * 3_600_000;
const TOUCH_AFTER_MS = 60_000;
/** The bus topic (and metric label) of session invalidations; keys are token hashes. */
export const SESSION_CACHE = 'sessions';

interface CachedSession {
  sid: string;
  uid: string;
  adm: boolean;
  exp: number;
}

export interface NewSession {
  /** The bearer token: shown to the client once, stored only as its SHA-256. */
  token: string;
  sessionId: string;
  expiresAt: Date;
}

export interface SessionMeta {
  ip?: string | null;
  userAgent?: string | null;
}

export interface SessionLookupOptions {
  /** Runs before a lookup the cache cannot answer (the kernel's auth-failure budget check). */
  beforeLookup?: () => Promise<void>;
}

/**
 * Sessions: Postgres is the record (token stored as SHA-256); each process keeps the sessions in use in
 * a local cache (platform/cache/local-cache.ts) that is never older than `cacheMaxAgeMs`, so a cached
 * request costs no round trip for its session. Every change that ends or alters a session (logout,
 * revocation, password change, account disable, platform-admin change) invalidates its token hash after
 * commit, in this process at once and in every other one over the invalidation bus (Redis pub/sub).
 * A lost message (the revoking process cut off from Redis and its retries failing) leaves other processes
 * serving the session for at most `cacheMaxAgeMs`; a process whose own subscription is down reads
 * Postgres on every request.
 */
export function createSessionStore(deps: { repo: IdentityRepo; invalidations: InvalidationBus; cacheMaxAgeMs: number }) {
  const { repo } = deps;
  const cache = createLocalCache<CachedSession>({ name: SESSION_CACHE, bus: deps.invalidations, maxAgeMs: deps.cacheMaxAgeMs });

  async function load(tokenHash: string): Promise<CachedSession | null> {
    const row = await repo.sessionByTokenHash(tokenHash);
    if (!row || row.revokedAt || row.userDisabledAt || row.expiresAt.getTime() <= Date.now()) return null;
    if (Date.now() - row.lastUsedAt.getTime() > TOUCH_AFTER_MS) await repo.touchSession(row.id);
    return { sid: row.id, uid: row.userId, adm: row.isPlatformAdmin, exp: row.expiresAt.getTime() };
  }

  return {
    /** A new session in the caller's transaction; the token is returned only here. */
    async create(trx: TxHandle, userId: string, meta: SessionMeta): Promise<NewSession> {
      const token = newSecret(SESSION_PREFIX);
      const sessionId = newId();
      const expiresAt = new Date(Date.now() + SESSION_TTL_MS);
      await repo.insertSession(trx, {
        id: sessionId,
        userId,
        tokenHash: sha256Hex(token),
        ip: meta.ip?.slice(0, 64) ?? null,
        userAgent: meta.userAgent?.slice(0, 256) ?? null,
        expiresAt,
      });
      return { token, sessionId, expiresAt };
    },

    async authenticate(token: string, opts: SessionLookupOptions = {}): Promise<Principal | null> {
      if (!token.startsWith(SESSION_PREFIX) || token.length > 100) return null;
      const tokenHash = sha256Hex(token);
      const s = await cache.get(tokenHash, () => load(tokenHash), { beforeLoad: opts.beforeLookup });
      if (!s || s.exp <= Date.now()) return null;
      return { kind: 'user', userId: s.uid, sessionId: s.sid, isPlatformAdmin: s.adm };
    },

    /** Marks sessions revoked in the caller's transaction; returns their hashes for invalidate() after commit. */
    revoke: repo.revokeSessions,

    /** After commit: every process drops these sessions (revoked, or to be rebuilt from Postgres). */
    invalidate: async (tokenHashes: string[]): Promise<void> => void (await cache.invalidate(tokenHashes)),

    activeHashes: repo.activeSessionHashes,
    list: repo.activeSessions,
    close: () => cache.close(),
  };
}

export type SessionStore = ReturnType<typeof createSessionStore>;
