import { AppError } from '../../platform/http/errors.ts';
import { newId } from '../../platform/ids.ts';
import type { IdentityRepo } from './identity.repo.ts';

export interface ThrottleLimits {
  /** Processed failed logins per account per sliding hour (the ceiling: 100). */
  perAccountPerHour: number;
  perIpPerHour: number;
}

const WINDOW_MS = 3_600_000;
const SWEEP_PROBABILITY = 0.02;

/**
 * Durable login throttling in Postgres (no Redis needed, survives restarts, shared by all instances).
 * An attempt reserves a row for its account and its IP *before* the password is checked, under an
 * advisory lock per key, so concurrent guesses cannot overshoot the limit; a success releases the rows.
 */
export function createLoginThrottle(repo: IdentityRepo, limits: ThrottleLimits) {
  return {
    /** Reserves the attempt, or throws 429 with Retry-After when the account or IP is over its limit. */
    async begin(accountKey: string, ip: string): Promise<string[]> {
      return repo.inAppTransaction(async (trx) => {
        const account = await repo.lockAndCountAttempts(trx, 'account', accountKey);
        const byIp = await repo.lockAndCountAttempts(trx, 'ip', ip);
        const over = [
          account.n >= limits.perAccountPerHour ? account.oldest : null,
          byIp.n >= limits.perIpPerHour ? byIp.oldest : null,
        ].filter((d): d is Date => d !== null);
        if (over.length > 0) {
          const until = Math.max(...over.map((d) => d.getTime() + WINDOW_MS));
          const retryAfter = Math.max(1, Math.ceil((until - Date.now()) / 1000));
          throw new AppError('AUTH.TOO_MANY_ATTEMPTS', 429, 'Too many failed sign-in attempts; try again later', {}, {
            'retry-after': String(retryAfter),
          });
        }
        // Keys that are never tried again would keep their rows: now and then, sweep a batch of expired ones.
        if (Math.random() < SWEEP_PROBABILITY) await repo.sweepAttempts(trx);
        const ids = [newId(), newId()] as const;
        await repo.insertAttempts(trx, [
          { id: ids[0], scope: 'account', key: accountKey },
          { id: ids[1], scope: 'ip', key: ip },
        ]);
        return [...ids];
      });
    },
    /** A successful login does not count as a failure. */
    async succeeded(ids: string[]): Promise<void> {
      await repo.deleteAttempts(ids);
    },
  };
}
