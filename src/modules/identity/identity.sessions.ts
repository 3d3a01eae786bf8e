import type { Logger } from 'pino';
import type { TxHandle } from '../../platform/db/database.ts';
import type { Principal } from '../../platform/http/auth.ts';
import { newId } from '../../platform/ids.ts';
import type { Redis } from '../../platform/redis.ts';
import type { ResiliencePolicy } from '../../platform/resilience/policy.ts';
import type { IdentityRepo } from './identity.repo.ts';
import { newSecret, sha256Hex } from './identity.tokens.ts';

export const SESSION_PREFIX = 'pls_';
export const SESSION_TTL_MS = 30 * 24 * 3_600_000;
/** How long Redis may answer for a session before Postgres is asked again. */
const CACHE_TTL_S = 60;
const REVOKED = 'revoked';
const TOUCH_AFTER_MS = 60_000;
const RETRY_MS = 1_000;

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

/**
 * Sessions: Postgres is the record (token stored as SHA-256), Redis a shared cache in front of it.
 * Revocation writes a short-lived "revoked" tombstone over the cache entry, and the cache is filled only
 * with SET NX, so a request that read Postgres just before the revocation cannot re-cache a dead session.
 * Without Redis (or with Redis down) every request reads Postgres: sessions keep working.
 * Every Redis call goes through the shared `redis` policy (platform.policies.redis): a slow Redis costs a
 * request at most its timeout, and once the breaker is open the cache is skipped without a round trip.
 */
export function createSessionStore(deps: { repo: IdentityRepo; redis: Redis | undefined; policy: ResiliencePolicy; prefix: string; logger: Logger }) {
  const { repo, redis, policy, logger } = deps;
  const key = (tokenHash: string) => `${deps.prefix}session:${tokenHash}`;
  const call = <R>(fn: (r: Redis) => Promise<R>): Promise<R> => policy.execute(() => fn(redis!));

  async function cacheGet(tokenHash: string): Promise<CachedSession | 'revoked' | null> {
    if (!redis) return null;
    try {
      const v = await call((r) => r.get(key(tokenHash)));
      if (!v) return null;
      return v === REVOKED ? REVOKED : (JSON.parse(v) as CachedSession);
    } catch {
      return null; // Redis down or breaker open: Postgres answers
    }
  }

  async function cacheFill(tokenHash: string, entry: CachedSession): Promise<void> {
    if (!redis) return;
    const ttl = Math.min(CACHE_TTL_S, Math.floor((entry.exp - Date.now()) / 1000));
    if (ttl <= 0) return;
    await call((r) => r.set(key(tokenHash), JSON.stringify(entry), 'EX', ttl, 'NX')).catch(() => undefined);
  }

  async function writeTombstones(tokenHashes: string[]): Promise<void> {
    const results = await call((r) => {
      const multi = r.multi();
      for (const h of tokenHashes) multi.set(key(h), REVOKED, 'EX', CACHE_TTL_S);
      return multi.exec();
    });
    if (!results || results.some(([err]) => err)) throw new Error('tombstone write failed');
  }

  /**
   * After a revocation commits: every instance's next request for these tokens is 401. If Redis cannot
   * be reached, keep retrying in the background until any entry cached before the revocation has
   * expired (CACHE_TTL_S), so an instance that can still reach Redis never serves it for long.
   */
  async function tombstone(tokenHashes: string[]): Promise<void> {
    if (!redis || tokenHashes.length === 0) return;
    try {
      await writeTombstones(tokenHashes);
    } catch (err) {
      logger.warn({ err: (err as Error).message, sessions: tokenHashes.length }, 'could not mark revoked sessions in Redis; retrying');
      const giveUpAt = Date.now() + CACHE_TTL_S * 1000;
      const retry = () => {
        if (Date.now() > giveUpAt) return;
        writeTombstones(tokenHashes).catch(() => setTimeout(retry, RETRY_MS).unref());
      };
      setTimeout(retry, RETRY_MS).unref();
    }
  }

  /** Drops cached entries so they are rebuilt from Postgres (e.g. after a platform-admin change). */
  async function forget(tokenHashes: string[]): Promise<void> {
    if (!redis || tokenHashes.length === 0) return;
    await call((r) => r.del(...tokenHashes.map(key))).catch(() => 0);
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

    async authenticate(token: string): Promise<Principal | null> {
      if (!token.startsWith(SESSION_PREFIX) || token.length > 100) return null;
      const tokenHash = sha256Hex(token);
      const cached = await cacheGet(tokenHash);
      if (cached === REVOKED) return null;
      if (cached && cached.exp > Date.now()) {
        return { kind: 'user', userId: cached.uid, sessionId: cached.sid, isPlatformAdmin: cached.adm };
      }
      const row = await repo.sessionByTokenHash(tokenHash);
      if (!row || row.revokedAt || row.userDisabledAt || row.expiresAt.getTime() <= Date.now()) return null;
      if (Date.now() - row.lastUsedAt.getTime() > TOUCH_AFTER_MS) await repo.touchSession(row.id);
      await cacheFill(tokenHash, { sid: row.id, uid: row.userId, adm: row.isPlatformAdmin, exp: row.expiresAt.getTime() });
      return { kind: 'user', userId: row.userId, sessionId: row.id, isPlatformAdmin: row.isPlatformAdmin };
    },

    /** Marks sessions revoked in the caller's transaction; returns their hashes for tombstone() after commit. */
    revoke: repo.revokeSessions,

    tombstone,
    forget,

    activeHashes: repo.activeSessionHashes,
    list: repo.activeSessions,
  };
}

export type SessionStore = ReturnType<typeof createSessionStore>;
