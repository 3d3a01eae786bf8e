import { ZxcvbnFactory } from '@zxcvbn-ts/core';
import { adjacencyGraphs, dictionary } from '@zxcvbn-ts/language-common';
import { AppError } from '../../platform/http/errors.ts';

/**
 * Password strength by zxcvbn (@zxcvbn-ts, with its common-password, name and word dictionaries and
 * keyboard graphs): a password is refused when its estimated guessability score is below 3 of 4
 * (3 = "safely unguessable: moderate protection from an offline slow-hash scenario", about 10^8+
 * guesses). That refuses repeats ("aaaaaaaa", eight spaces), sequences ("abcdefgh", "12345678"),
 * keyboard walks ("qwertyuiop"), dictionary words and common passwords with digits or l33t
 * substitutions appended ("P@ssw0rd!", "iloveyou2024"), dates, and passwords built from the user's own
 * email or name.
 */
export const MIN_PASSWORD_SCORE = 3;
/** zxcvbn's analysis is superlinear in length; the policy's maximum is 128 characters anyway. */
const ANALYSED_LENGTH = 128;

let estimator: ZxcvbnFactory | undefined;
/** Built on first use (loading the dictionaries takes about half a second). */
function zxcvbn(): ZxcvbnFactory {
  estimator ??= new ZxcvbnFactory({ dictionary: { ...dictionary }, graphs: adjacencyGraphs, maxLength: ANALYSED_LENGTH });
  return estimator;
}

// zxcvbn's warning keys, as sentences (its translations package is not needed for these few).
const WARNINGS: Record<string, string> = {
  common: 'it is a commonly used password',
  topTen: 'it is one of the ten most used passwords',
  topHundred: 'it is one of the hundred most used passwords',
  similarToCommon: 'it is a common password with small changes',
  straightRow: 'it is a straight row of keys',
  keyPattern: 'it is a short keyboard pattern',
  simpleRepeat: 'it repeats characters',
  extendedRepeat: 'it repeats a pattern',
  sequences: 'it is a common character sequence',
  recentYears: 'it contains a recent year',
  dates: 'it contains a date',
  wordByItself: 'it is a single word',
  namesByThemselves: 'it is a name',
  commonNames: 'it is a common name',
  userInputs: 'it contains your email address or name',
  pwned: 'it appeared in a data breach',
};
const COMMON = new Set(['common', 'topTen', 'topHundred', 'similarToCommon']);

/** 422 when zxcvbn scores the password below MIN_PASSWORD_SCORE; the detail says why. */
export function checkPasswordStrength(password: string, context: { email?: string; name?: string }): void {
  const inputs = [context.email, context.email?.split('@')[0], context.name].filter((s): s is string => Boolean(s));
  const result = zxcvbn().check(password.slice(0, ANALYSED_LENGTH), inputs);
  if (result.score >= MIN_PASSWORD_SCORE) return;
  const warning = result.feedback.warning ?? '';
  const why = WARNINGS[warning] ?? 'it is too easy to guess';
  const code = COMMON.has(warning) ? 'IDENTITY.COMMON_PASSWORD' : 'IDENTITY.WEAK_PASSWORD';
  throw new AppError(code, 422, `This password is too weak: ${why}. Use a longer passphrase of unrelated words.`, {
    strength: { score: result.score, required: MIN_PASSWORD_SCORE },
  });
}
