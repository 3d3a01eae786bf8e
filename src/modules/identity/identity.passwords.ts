import fs from 'node:fs';
import { hash, verify, type Algorithm, type Options } from '@node-rs/argon2';
import { AppError } from '../../platform/http/errors.ts';
import { checkPasswordStrength } from './identity.password-policy.ts';

/** OWASP's argon2id minimum: 19 MiB, 2 passes, 1 lane. Algorithm 2 = Argon2id (a const enum upstream). */
export const ARGON2_OPTIONS: Options = { algorithm: 2 as Algorithm, memoryCost: 19_456, timeCost: 2, parallelism: 1 };

/**
 * The test suite's argon2id (1 MiB, 1 pass): the suite signs up and logs in thousands of times, and at the
 * production cost hashing alone was a tenth of its CPU. Only when NODE_ENV is `test` (vitest sets it) AND
 * PLINTH_TEST_FAST_PASSWORD_HASH=1 (vitest.config.ts): a production process ignores the variable. Hashes
 * carry their parameters, so verification is the same code either way; identity.test.ts checks the
 * production parameters explicitly.
 */
function hashOptions(): Options {
  if (process.env.NODE_ENV === 'test' && process.env.PLINTH_TEST_FAST_PASSWORD_HASH === '1') {
    return { ...ARGON2_OPTIONS, memoryCost: 1024, timeCost: 1 };
  }
  return ARGON2_OPTIONS;
}
export const PASSWORD_MIN = 8;
export const PASSWORD_MAX = 128;

let common: Set<string> | undefined;
function commonPasswords(): Set<string> {
  common ??= new Set(
    fs
      .readFileSync(new URL('./common-passwords.txt', import.meta.url), 'utf8')
      .split('\n')
      .map((l) => l.trim())
      .filter(Boolean),
  );
  return common;
}

/** 422 for a password we refuse; length is counted in code points so emoji count once. */
export function checkPasswordPolicy(password: string, context: { email?: string; name?: string } = {}): void {
  const length = [...password].length;
  if (length < PASSWORD_MIN || length > PASSWORD_MAX) {
    throw new AppError('IDENTITY.WEAK_PASSWORD', 422, `The password must be ${PASSWORD_MIN}–${PASSWORD_MAX} characters long`);
  }
  const lower = password.toLowerCase();
  if (commonPasswords().has(lower)) {
    throw new AppError('IDENTITY.COMMON_PASSWORD', 422, 'This password is too common; choose another one');
  }
  const local = context.email?.split('@')[0]?.toLowerCase();
  if (local && local.length >= 4 && lower === local) {
    throw new AppError('IDENTITY.WEAK_PASSWORD', 422, 'The password must not be your email address');
  }
  checkPasswordStrength(password, context);
}

export function hashPassword(password: string): Promise<string> {
  return hash(password, hashOptions());
}

export async function verifyPassword(passwordHash: string, password: string): Promise<boolean> {
  try {
    return await verify(passwordHash, password);
  } catch {
    return false;
  }
}

let dummy: Promise<string> | undefined;
/** A real hash with the same parameters, verified for unknown emails so both paths cost one argon2 run. */
export function dummyPasswordHash(): Promise<string> {
  dummy ??= hashPassword(`dummy-${Math.random()}-password`);
  return dummy;
}
