import { sql, type Transaction } from 'kysely';
import type { Database } from '../../platform/db/database.ts';
import { AppError } from '../../platform/http/errors.ts';
import { newId } from '../../platform/ids.ts';
import type { ThrottleLimits } from './identity.throttle.ts';

/**
 * Brute-force protection that cannot be turned into a lockout of someone else's account.
 *
 * Failed sign-ins (and wrong current passwords on a password change) are counted per sliding hour:
 *  1. per (account, client IP): at most `perAccountIpPerHour` (10) — one source guessing one account;
 *  2. per client IP, across accounts: at most `perIpPerHour` (1,000) — one source spraying accounts;
 *  3. per account, from every source together: from the `delayAfter`-th (5th) failure on, each further
 *     attempt waits 2^(n - delayAfter) s after the latest failure (1 s, 2 s, 4 s … at most `maxDelaySec`,
 *     300 s), and at most `perAccountPerHour` (100) — a distributed guesser gets a few dozen guesses an
 *     hour instead of thousands.
 * From a client IP where this account has signed in successfully before (a session row from that IP),
 * limits 1 and 3 are checked after the password instead of before: the right password gets through, a
 * wrong one is still a 429 once over a limit. So whoever floods an account with wrong passwords — from
 * elsewhere or even from the owner's own address — cannot keep its owner out of their usual devices, and
 * a new device waits at most `maxDelaySec` between attempts, never an hour. Limit 2 applies to everyone.
 * Attempts are reserved before the password is checked, under advisory locks, so concurrent guesses
 * cannot overshoot; a success releases its reservation.
 */
export interface LockoutLimits extends ThrottleLimits {
  perAccountIpPerHour: number;
  delayAfter: number;
  maxDelaySec: number;
}

export const DEFAULT_LOCKOUT: LockoutLimits = { perAccountPerHour: 100, perIpPerHour: 1000, perAccountIpPerHour: 10, delayAfter: 5, maxDelaySec: 300 };
const WINDOW_MS = 3_600_000;
const SWEEP_PROBABILITY = 0.02;

type Scope = 'account' | 'ip' | 'account_ip';

async function window(trx: Transaction<any>, scope: Scope, key: string): Promise<{ n: number; oldest: number; newest: number }> {
  await sql`select pg_advisory_xact_lock(hashtext(${`login:${scope}:${key}`}))`.execute(trx);
  await sql`delete from login_attempts where scope = ${scope} and key = ${key} and attempted_at < now() - interval '1 hour'`.execute(trx);
  const { rows } = await sql<{ n: number | string; oldest: Date | null; newest: Date | null }>`
    select count(*) as n, min(attempted_at) as oldest, max(attempted_at) as newest
    from login_attempts where scope = ${scope} and key = ${key}`.execute(trx);
  const r = rows[0]!;
  return { n: Number(r.n), oldest: r.oldest ? new Date(r.oldest).getTime() : 0, newest: r.newest ? new Date(r.newest).getTime() : 0 };
}

const tooMany = (untilMs: number) =>
  new AppError('AUTH.TOO_MANY_ATTEMPTS', 429, 'Too many failed sign-in attempts; try again later', {}, {
    'retry-after': String(Math.max(1, Math.ceil((untilMs - Date.now()) / 1000))),
  });

export function createLoginLockout(db: Database, limits: LockoutLimits) {
  /** Has this account signed in from this IP before? (sessions keep the client IP, revoked or not) */
  async function knownSource(trx: Transaction<any>, accountKey: string, ip: string): Promise<boolean> {
    const row = await trx
      .selectFrom('sessions as s')
      .innerJoin('users as u', 'u.id', 's.user_id')
      .select('s.id')
      .where('u.email', '=', accountKey)
      .where('s.ip', '=', ip.slice(0, 64))
      .limit(1)
      .executeTakeFirst();
    return row !== undefined;
  }

  return {
    /**
     * Reserves the attempt, or throws 429 with Retry-After. From a known source over a limit it returns
     * the 429 as `refusal` instead: the caller throws it only if the password turns out wrong.
     */
    async begin(accountKey: string, ip: string): Promise<string[] & { refusal?: AppError }> {
      return db.app.transaction().execute(async (trx) => {
        const pairKey = `${accountKey} ${ip}`;
        const pair = await window(trx, 'account_ip', pairKey);
        const byIp = await window(trx, 'ip', ip);
        if (byIp.n >= limits.perIpPerHour) throw tooMany(byIp.oldest + WINDOW_MS);
        const account = await window(trx, 'account', accountKey);
        const delayMs = Math.min(2 ** (account.n - limits.delayAfter), limits.maxDelaySec) * 1000;
        const refusal =
          pair.n >= limits.perAccountIpPerHour ? tooMany(pair.oldest + WINDOW_MS)
          : account.n >= limits.perAccountPerHour ? tooMany(account.oldest + WINDOW_MS)
          : account.n >= limits.delayAfter && Date.now() < account.newest + delayMs ? tooMany(account.newest + delayMs)
          : undefined;
        if (refusal && !(await knownSource(trx, accountKey, ip))) throw refusal;
        // Keys that are never tried again would keep their rows: now and then, sweep a batch of expired ones.
        if (Math.random() < SWEEP_PROBABILITY) {
          await sql`delete from login_attempts where id in (
                      select id from login_attempts where attempted_at < now() - interval '1 hour' limit 1000)`.execute(trx);
        }
        const rows = [
          { id: newId(), scope: 'account', key: accountKey },
          { id: newId(), scope: 'ip', key: ip },
          { id: newId(), scope: 'account_ip', key: pairKey },
        ];
        await trx.insertInto('login_attempts').values(rows).execute();
        return Object.assign(rows.map((r) => r.id), { refusal });
      });
    },
    /** A successful attempt does not count as a failure. */
    async succeeded(ids: string[]): Promise<void> {
      await db.app.deleteFrom('login_attempts').where('id', 'in', ids).execute();
    },
  };
}
