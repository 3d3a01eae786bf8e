import { AppError } from '../../platform/http/errors.ts';
import { newId } from '../../platform/ids.ts';
import type { IdentityRepo } from './identity.repo.ts';

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
 * Attempts are reserved before the password is checked, under advisory locks (identity.repo.ts), so
 * concurrent guesses cannot overshoot; a success releases its reservation. Postgres holds the counts: no
 * Redis needed, they survive restarts and are shared by every instance.
 */
export interface LockoutLimits {
  /** Failures per account per sliding hour, from all sources (the hard cap). */
  perAccountPerHour: number;
  perIpPerHour: number;
  perAccountIpPerHour: number;
  delayAfter: number;
  maxDelaySec: number;
}

export const DEFAULT_LOCKOUT: LockoutLimits = { perAccountPerHour: 100, perIpPerHour: 1000, perAccountIpPerHour: 10, delayAfter: 5, maxDelaySec: 300 };
const WINDOW_MS = 3_600_000;
const SWEEP_PROBABILITY = 0.02;

const tooMany = (untilMs: number) =>
  new AppError('AUTH.TOO_MANY_ATTEMPTS', 429, 'Too many failed sign-in attempts; try again later', {}, {
    'retry-after': String(Math.max(1, Math.ceil((untilMs - Date.now()) / 1000))),
  });

const time = (d: Date | null) => (d ? d.getTime() : 0);

export function createLoginLockout(repo: IdentityRepo, limits: LockoutLimits) {
  return {
    /**
     * Reserves the attempt, or throws 429 with Retry-After. From a known source over a limit it returns
     * the 429 as `refusal` instead: the caller throws it only if the password turns out wrong.
     */
    async begin(accountKey: string, ip: string): Promise<string[] & { refusal?: AppError }> {
      return repo.inAppTransaction(async (trx) => {
        const pairKey = `${accountKey} ${ip}`;
        const pair = await repo.lockAndCountAttempts(trx, 'account_ip', pairKey);
        const byIp = await repo.lockAndCountAttempts(trx, 'ip', ip);
        if (byIp.n >= limits.perIpPerHour) throw tooMany(time(byIp.oldest) + WINDOW_MS);
        const account = await repo.lockAndCountAttempts(trx, 'account', accountKey);
        const delayMs = Math.min(2 ** (account.n - limits.delayAfter), limits.maxDelaySec) * 1000;
        const refusal =
          pair.n >= limits.perAccountIpPerHour ? tooMany(time(pair.oldest) + WINDOW_MS)
          : account.n >= limits.perAccountPerHour ? tooMany(time(account.oldest) + WINDOW_MS)
          : account.n >= limits.delayAfter && Date.now() < time(account.newest) + delayMs ? tooMany(time(account.newest) + delayMs)
          : undefined;
        if (refusal && !(await repo.signedInFrom(trx, accountKey, ip))) throw refusal;
        // Keys that are never tried again would keep their rows: now and then, sweep a batch of expired ones.
        if (Math.random() < SWEEP_PROBABILITY) await repo.sweepAttempts(trx);
        const rows = [
          { id: newId(), scope: 'account', key: accountKey },
          { id: newId(), scope: 'ip', key: ip },
          { id: newId(), scope: 'account_ip', key: pairKey },
        ];
        await repo.insertAttempts(trx, rows);
        return Object.assign(rows.map((r) => r.id), { refusal });
      });
    },
    /** A successful attempt does not count as a failure. */
    async succeeded(ids: string[]): Promise<void> {
      await repo.deleteAttempts(ids);
    },
  };
}
