import { randomBytes } from 'node:crypto';
import { generateSecret, generateURI, verify } from 'otplib';
import type { CacheProvider } from '../../platform/cache/cache.ts';
import type { SecretBox } from '../../platform/crypto/secret-box.ts';
import type { TxHandle } from '../../platform/db/database.ts';
import type { ActorContext } from '../../platform/http/actor.ts';
import { AppError } from '../../platform/http/errors.ts';
import { newId } from '../../platform/ids.ts';
import { PLATFORM_AUDIT_TENANT, type Audit } from '../audit/index.ts';
import type { createLoginLockout } from './identity.lockout.ts';
import type { NewSession, SessionStore } from './identity.sessions.ts';
import { newSecret, sha256Hex } from './identity.tokens.ts';
import type { MfaRepo } from './mfa.repo.ts';
import type { IdentityTx } from './identity.repo.ts';

/** Where the sign-in comes from (identity's RequestMeta). */
interface RequestMeta {
  ip: string;
  userAgent: string | null;
  requestId: string;
}

export const MFA_CHALLENGE_PREFIX = 'plm_';
const CHALLENGE_TTL_MS = 5 * 60_000;
const CHALLENGE_MAX_ATTEMPTS = 5;
const RECOVERY_CODES = 10;
/** One 30 s step either side: a phone clock a little off still works. */
const TOTP_TOLERANCE_SEC = 30;
const ISSUER = 'Plinth';
const SIX_DIGITS = /^[0-9]{6}$/;

export const mfaInvalidCode = () => new AppError('MFA.INVALID_CODE', 401, 'The verification code is incorrect or was already used');
export const mfaNotEnabled = () => new AppError('MFA.NOT_ENABLED', 409, 'Two-factor authentication is not enabled');
const alreadyEnabled = () => new AppError('MFA.ALREADY_ENABLED', 409, 'Two-factor authentication is already enabled; disable it first');
const noPendingEnrollment = () => new AppError('MFA.NO_PENDING_ENROLLMENT', 409, 'Start an enrollment first (POST /v1/me/mfa/totp)');
const challengeInvalid = () => new AppError('MFA.CHALLENGE_INVALID', 401, 'The sign-in challenge is unknown, expired or used up; sign in again');
export const stepUpRequired = (maxAgeSec: number) =>
  new AppError('AUTH.STEP_UP_REQUIRED', 403, `This action needs a second-factor check within the last ${Math.round(maxAgeSec / 60)} minutes (POST /v1/me/mfa/step-up)`, { maxAgeSec });

/** A code the user types: six digits (TOTP) or a recovery code (`xxxxx-xxxxx`). */
export interface SecondFactor {
  code?: string;
  recoveryCode?: string;
}

/** The RFC 6238 time step a TOTP code matched (otplib's result type is shared with HOTP, which has none). */
const stepOf = (r: object) => (r as { timeStep: number }).timeStep;

const normalizeRecovery = (c: string) => c.toLowerCase().replace(/[^a-z0-9]/g, '');
function newRecoveryCodes(): string[] {
  return Array.from({ length: RECOVERY_CODES }, () => {
    const s = randomBytes(8).toString('base64url').toLowerCase().replace(/[^a-z0-9]/g, '').padEnd(10, '0').slice(0, 10);
    return `${s.slice(0, 5)}-${s.slice(5)}`;
  });
}

export interface MfaDeps {
  repo: MfaRepo;
  audit: Audit;
  sessions: SessionStore;
  throttle: ReturnType<typeof createLoginLockout>;
  secrets: SecretBox;
  cache: CacheProvider;
  /** identity's transaction in the platform audit chain. */
  inPlatformTx: <T>(fn: (trx: IdentityTx) => Promise<T>) => Promise<T>;
  emailOf: (userId: string) => Promise<string>;
}

/**
 * TOTP (RFC 6238, `otplib`) as a second factor, with one-time recovery codes stored as SHA-256. A code is
 * accepted once: the time step it matched is recorded, and older or equal steps never verify again.
 * Wrong codes count as failed sign-ins in identity's lockout (per account and IP), so knowing the password
 * does not buy unlimited guesses.
 */
export function createMfa(deps: MfaDeps) {
  const { repo, audit, sessions, throttle, secrets, inPlatformTx } = deps;
  // Read on every org request when an org requires MFA: cached (L1 + Redis), dropped on every change.
  const enabledCache = deps.cache.namespace<boolean>('mfa-enabled', { ttlSec: 300 });
  const forget = (userId: string) => enabledCache.invalidate(PLATFORM_AUDIT_TENANT, userId);

  async function record(trx: TxHandle, userId: string, action: string, ctx: ActorContext, changes: Record<string, unknown> = {}) {
    await audit.record(trx, { orgId: PLATFORM_AUDIT_TENANT, action, target: { type: 'user', id: userId }, changes, context: ctx });
  }

  /** Checks a TOTP or recovery code inside the caller's transaction (the factor row locked); false if wrong. */
  async function checkFactor(trx: TxHandle, userId: string, f: SecondFactor): Promise<'totp' | 'recovery_code' | null> {
    const factor = await repo.lockFactor(trx, userId);
    if (!factor?.enabledAt) return null;
    if (f.code) {
      if (!SIX_DIGITS.test(f.code)) return null;
      const r = await verify({ secret: secrets.open(factor.secretCiphertext), token: f.code, epochTolerance: TOTP_TOLERANCE_SEC, afterTimeStep: factor.lastStep ?? undefined });
      if (!r.valid) return null;
      await repo.useStep(trx, userId, stepOf(r));
      return 'totp';
    }
    if (f.recoveryCode) return (await repo.useRecoveryCode(trx, userId, sha256Hex(normalizeRecovery(f.recoveryCode)))) ? 'recovery_code' : null;
    return null;
  }

  /** A failed code counts against the account like a failed password (429 past the limits). */
  async function throttled<T>(userId: string, ip: string, attempt: () => Promise<T | null>, onFail?: () => Promise<void>): Promise<T> {
    const reserved = await throttle.begin(await deps.emailOf(userId), ip);
    const result = await attempt();
    if (result === null) {
      await onFail?.();
      throw reserved.refusal ?? mfaInvalidCode();
    }
    await throttle.succeeded(reserved);
    return result;
  }

  /** A change that needs a current code: checked (throttled) and applied in one platform transaction. */
  async function withProvedFactor(userId: string, f: SecondFactor, ctx: ActorContext, apply: (trx: IdentityTx, via: 'totp' | 'recovery_code') => Promise<void>): Promise<void> {
    if (!(await repo.factor(userId))?.enabledAt) throw mfaNotEnabled();
    await throttled(userId, ctx.ip ?? 'unknown', () =>
      inPlatformTx(async (trx) => {
        const via = await checkFactor(trx, userId, f);
        if (!via) return null;
        await apply(trx, via);
        return via;
      }),
    );
  }

  return {
    async isEnabled(userId: string): Promise<boolean> {
      return enabledCache.get(PLATFORM_AUDIT_TENANT, userId, async () => Boolean((await repo.factor(userId))?.enabledAt));
    },

    async status(userId: string): Promise<{ enabled: boolean; recoveryCodesRemaining: number }> {
      const f = await repo.factor(userId);
      return { enabled: Boolean(f?.enabledAt), recoveryCodesRemaining: f?.enabledAt ? await repo.unusedRecoveryCodes(userId) : 0 };
    },

    /** Step 1: a new secret (pending until a code from it is verified). */
    async startEnrollment(userId: string, email: string, ctx: ActorContext): Promise<{ secret: string; otpauthUrl: string }> {
      const existing = await repo.factor(userId);
      if (existing?.enabledAt) throw alreadyEnabled();
      const secret = generateSecret();
      await inPlatformTx(async (trx) => {
        await repo.upsertPending(trx, userId, secrets.seal(secret));
        await record(trx, userId, 'mfa.enrollment_started', ctx);
      });
      return { secret, otpauthUrl: generateURI({ issuer: ISSUER, label: email, secret }) };
    },

    /** Step 2: a code from the authenticator enables the factor; returns the recovery codes (shown once). */
    async confirmEnrollment(userId: string, sessionId: string, code: string, ctx: ActorContext & { ip: string | null }): Promise<{ recoveryCodes: string[] }> {
      const codes = newRecoveryCodes();
      const revoked = await throttled(userId, ctx.ip ?? 'unknown', () =>
        inPlatformTx(async (trx) => {
          const factor = await repo.lockFactor(trx, userId);
          if (!factor) throw noPendingEnrollment();
          if (factor.enabledAt) throw alreadyEnabled();
          if (!SIX_DIGITS.test(code)) return null;
          const r = await verify({ secret: secrets.open(factor.secretCiphertext), token: code, epochTolerance: TOTP_TOLERANCE_SEC });
          if (!r.valid) return null;
          await repo.enable(trx, userId, stepOf(r));
          await repo.replaceRecoveryCodes(trx, userId, codes.map((c) => sha256Hex(normalizeRecovery(c))));
          await repo.markSessionMfa(trx, sessionId);
          // Sessions opened with the password alone end here; this one carries on.
          const revoked = await sessions.revoke(trx, { userId, exceptSessionId: sessionId });
          await record(trx, userId, 'mfa.enabled', ctx, { factor: 'totp', recoveryCodes: codes.length, sessionsRevoked: revoked.length });
          return revoked;
        }),
      );
      await sessions.invalidate(revoked);
      await forget(userId);
      return { recoveryCodes: codes };
    },

    /** Turning MFA off needs a current code (a stolen session alone cannot). */
    async disable(userId: string, f: SecondFactor, ctx: ActorContext & { ip: string | null }): Promise<void> {
      await withProvedFactor(userId, f, ctx, async (trx, via) => {
        await repo.remove(trx, userId);
        await record(trx, userId, 'mfa.disabled', ctx, { via });
      });
      await forget(userId);
    },

    async regenerateRecoveryCodes(userId: string, f: SecondFactor, ctx: ActorContext & { ip: string | null }): Promise<{ recoveryCodes: string[] }> {
      const codes = newRecoveryCodes();
      await withProvedFactor(userId, f, ctx, async (trx, via) => {
        await repo.replaceRecoveryCodes(trx, userId, codes.map((c) => sha256Hex(normalizeRecovery(c))));
        await record(trx, userId, 'mfa.recovery_codes_regenerated', ctx, { via, recoveryCodes: codes.length });
      });
      return { recoveryCodes: codes };
    },

    /** Proves the second factor again for this session (step-up before a sensitive action). */
    async stepUp(userId: string, sessionId: string, f: SecondFactor, ctx: ActorContext & { ip: string | null }): Promise<void> {
      await withProvedFactor(userId, f, ctx, async (trx, via) => {
        await repo.markSessionMfa(trx, sessionId);
        await record(trx, userId, 'mfa.step_up', ctx, { via, sessionId });
      });
    },

    /**
     * 403 AUTH.STEP_UP_REQUIRED unless this session proved the second factor within `maxAgeSec`. Users
     * without MFA pass (an org that wants it for everyone sets its MFA-required policy).
     */
    async assertRecentMfa(userId: string, sessionId: string | undefined, maxAgeSec: number): Promise<void> {
      if (!(await this.isEnabled(userId))) return;
      const at = sessionId ? await repo.sessionMfaAt(sessionId) : null;
      if (!at || Date.now() - at.getTime() > maxAgeSec * 1000) throw stepUpRequired(maxAgeSec);
    },

    /** After a correct password: a challenge token to present with the second factor. */
    async challenge(userId: string, meta: RequestMeta): Promise<{ mfaToken: string; expiresAt: Date }> {
      const mfaToken = newSecret(MFA_CHALLENGE_PREFIX);
      const expiresAt = new Date(Date.now() + CHALLENGE_TTL_MS);
      await repo.insertChallenge({ id: newId(), userId, tokenHash: sha256Hex(mfaToken), ip: meta.ip.slice(0, 64), userAgent: meta.userAgent?.slice(0, 256) ?? null, expiresAt });
      return { mfaToken, expiresAt };
    },

    /** Step 2 of a password sign-in: the challenge + a TOTP or recovery code → a session (MFA-proved). */
    async completeChallenge(mfaToken: string, f: SecondFactor, meta: RequestMeta): Promise<NewSession & { userId: string }> {
      if (!mfaToken.startsWith(MFA_CHALLENGE_PREFIX) || mfaToken.length > 100) throw challengeInvalid();
      const tokenHash = sha256Hex(mfaToken);
      // Who the challenge is for, before the throttle (which is keyed by the account).
      const peek = await inPlatformTx((trx) => repo.lockChallenge(trx, tokenHash));
      if (!peek || peek.consumedAt || peek.expiresAt.getTime() <= Date.now() || peek.attempts >= CHALLENGE_MAX_ATTEMPTS) throw challengeInvalid();
      return throttled(
        peek.userId,
        meta.ip,
        () =>
          inPlatformTx(async (trx) => {
            const c = await repo.lockChallenge(trx, tokenHash);
            if (!c || c.consumedAt || c.expiresAt.getTime() <= Date.now() || c.attempts >= CHALLENGE_MAX_ATTEMPTS) throw challengeInvalid();
            const via = await checkFactor(trx, c.userId, f);
            if (!via) return null;
            await repo.consumeChallenge(trx, c.id);
            const s = await sessions.create(trx, c.userId, meta);
            await repo.markSessionMfa(trx, s.sessionId);
            await audit.record(trx, {
              orgId: PLATFORM_AUDIT_TENANT,
              action: 'session.created',
              target: { type: 'session', id: s.sessionId },
              changes: { mfa: via },
              context: { actor: { type: 'user', id: c.userId, userId: c.userId }, requestId: meta.requestId, ip: meta.ip },
            });
            return { ...s, userId: c.userId };
          }),
        () => repo.failChallenge(peek.id),
      );
    },
  };
}

export type Mfa = ReturnType<typeof createMfa>;
