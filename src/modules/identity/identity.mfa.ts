import { randomBytes } from 'node:crypto';
import { generateSecret, generateURI, verify } from 'otplib';
import type { CacheProvider } from '../../platform/cache/cache.ts';
import type { SecretBox } from '../../platform/crypto/secret-box.ts';
import type { TxHandle } from '../../platform/db/database.ts';
import type { ActorContext } from '../../platform/http/actor.ts';
import { AppError } from '../../platform/http/errors.ts';
import { newId } from '../../platform/ids.ts';
import { PLATFORM_AUDIT_TENANT, type Audit } from '../audit/index.ts';
import { webauthnErrors } from './identity.webauthn.ts';
import type { createLoginLockout } from './identity.lockout.ts';
import type { NewSession, SessionStore } from './identity.sessions.ts';
import { newSecret, sha256Hex } from './identity.tokens.ts';
import type { MfaRepo } from './mfa.repo.ts';
import type { IdentityTx } from './identity.repo.ts';
import type { AuthenticationResponseJSON, WebAuthnCore } from './identity.webauthn.ts';
import type { WebAuthnRepo } from './webauthn.repo.ts';

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
const webauthnNotRegistered = webauthnErrors.noneRegistered;
export const stepUpRequired = (maxAgeSec: number) =>
  new AppError('AUTH.STEP_UP_REQUIRED', 403, `This action needs a second-factor check within the last ${Math.round(maxAgeSec / 60)} minutes (POST /v1/me/mfa/step-up)`, { maxAgeSec });

/** A code the user types — six digits (TOTP) or a recovery code (`xxxxx-xxxxx`) — or a WebAuthn assertion. */
export interface SecondFactor {
  code?: string;
  recoveryCode?: string;
  webauthn?: AuthenticationResponseJSON;
}

export type FactorKind = 'totp' | 'recovery_code' | 'webauthn';

/** Users who enable their first factor this long ago or less may add another without a step-up. */
export const STEP_UP_MAX_AGE_SEC = 15 * 60;

/** The RFC 6238 time step a TOTP code matched (otplib's result type is shared with HOTP, which has none). */
const stepOf = (r: object) => (r as { timeStep: number }).timeStep;

const normalizeRecovery = (c: string) => c.toLowerCase().replace(/[^a-z0-9]/g, '');
/** How recovery codes are stored (SHA-256 of the normalized code). */
export const recoveryCodeHash = (c: string) => sha256Hex(normalizeRecovery(c));
export function newRecoveryCodes(): string[] {
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
  /** WebAuthn: a registered credential is a second factor too (assertions verified by the core). */
  webauthn: WebAuthnCore;
  webauthnRepo: WebAuthnRepo;
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

  /** Which factors the user has enabled (read fresh; with `trx`, in the caller's transaction). */
  async function factors(userId: string, trx?: TxHandle): Promise<{ totp: boolean; webauthn: number }> {
    const totp = trx ? await repo.lockFactor(trx, userId) : await repo.factor(userId);
    return { totp: Boolean(totp?.enabledAt), webauthn: await deps.webauthnRepo.countByUser(userId, trx) };
  }
  const anyFactor = (f: { totp: boolean; webauthn: number }) => f.totp || f.webauthn > 0;

  /**
   * Checks a TOTP code, a recovery code or a WebAuthn assertion inside the caller's transaction (the TOTP
   * row, or the credential, locked): the factor used, null for a wrong code, or a WebAuthn problem (the
   * transaction still commits: the challenge stays used, a counter regression stays audited).
   */
  async function checkFactor(trx: TxHandle, userId: string, f: SecondFactor, ctx: ActorContext, scope: { purpose: 'second_factor' | 'step_up'; mfaChallengeId?: string }): Promise<FactorKind | AppError | null> {
    if (f.webauthn) {
      const r = await deps.webauthn.verifyAssertion(trx, f.webauthn, { purpose: scope.purpose, userId, mfaChallengeId: scope.mfaChallengeId }, ctx);
      return r instanceof AppError ? r : 'webauthn';
    }
    if (f.recoveryCode) {
      if (!anyFactor(await factors(userId, trx))) return null;
      return (await repo.useRecoveryCode(trx, userId, recoveryCodeHash(f.recoveryCode))) ? 'recovery_code' : null;
    }
    const factor = await repo.lockFactor(trx, userId);
    if (!factor?.enabledAt) return null;
    if (f.code) {
      if (!SIX_DIGITS.test(f.code)) return null;
      const r = await verify({ secret: secrets.open(factor.secretCiphertext), token: f.code, epochTolerance: TOTP_TOLERANCE_SEC, afterTimeStep: factor.lastStep ?? undefined });
      if (!r.valid) return null;
      await repo.useStep(trx, userId, stepOf(r));
      return 'totp';
    }
    return null;
  }

  /** A failed proof counts against the account like a failed password (429 past the limits). */
  async function throttled<T>(userId: string, ip: string, attempt: () => Promise<T | AppError | null>, onFail?: () => Promise<void>): Promise<T> {
    const reserved = await throttle.begin(await deps.emailOf(userId), ip);
    const result = await attempt();
    if (result === null || result instanceof AppError) {
      await onFail?.();
      throw reserved.refusal ?? result ?? mfaInvalidCode();
    }
    await throttle.succeeded(reserved);
    return result;
  }

  /** A change that needs a current proof (code, recovery code or passkey): checked (throttled) and applied in one platform transaction. */
  async function withProvedFactor(userId: string, f: SecondFactor, ctx: ActorContext, apply: (trx: IdentityTx, via: FactorKind) => Promise<void>): Promise<void> {
    if (!anyFactor(await factors(userId))) throw mfaNotEnabled();
    await throttled(userId, ctx.ip ?? 'unknown', () =>
      inPlatformTx(async (trx) => {
        const via = await checkFactor(trx, userId, f, ctx, { purpose: 'step_up' });
        if (via === null || via instanceof AppError) return via;
        await apply(trx, via);
        return via;
      }),
    );
  }

  return {
    factors,
    forget,

    /** TOTP enabled or at least one passkey registered (cached: read on every org request of an MFA-requiring org). */
    async isEnabled(userId: string): Promise<boolean> {
      return enabledCache.get(PLATFORM_AUDIT_TENANT, userId, async () => anyFactor(await factors(userId)));
    },

    async status(userId: string): Promise<{ enabled: boolean; totp: boolean; webauthnCredentials: number; recoveryCodesRemaining: number }> {
      const f = await factors(userId);
      return { enabled: anyFactor(f), totp: f.totp, webauthnCredentials: f.webauthn, recoveryCodesRemaining: anyFactor(f) ? await repo.unusedRecoveryCodes(userId) : 0 };
    },

    /** Step 1: a new secret (pending until a code from it is verified). */
    async startEnrollment(userId: string, sessionId: string, email: string, ctx: ActorContext): Promise<{ secret: string; otpauthUrl: string }> {
      const existing = await repo.factor(userId);
      if (existing?.enabledAt) throw alreadyEnabled();
      // An account with a passkey: adding TOTP needs it proved recently (a stolen session cannot add the thief's app).
      await this.assertRecentMfa(userId, sessionId, STEP_UP_MAX_AGE_SEC);
      const secret = generateSecret();
      await inPlatformTx(async (trx) => {
        await repo.upsertPending(trx, userId, secrets.seal(secret));
        await record(trx, userId, 'mfa.enrollment_started', ctx);
      });
      return { secret, otpauthUrl: generateURI({ issuer: ISSUER, label: email, secret }) };
    },

    /** Step 2: a code from the authenticator enables the factor; returns the recovery codes (shown once). */
    async confirmEnrollment(userId: string, sessionId: string, code: string, ctx: ActorContext & { ip: string | null }): Promise<{ recoveryCodes: string[] }> {
      await this.assertRecentMfa(userId, sessionId, STEP_UP_MAX_AGE_SEC);
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
          await repo.replaceRecoveryCodes(trx, userId, codes.map(recoveryCodeHash));
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

    /**
     * Turning TOTP off needs a current proof (a stolen session alone cannot). The recovery codes go with it
     * unless passkeys remain (they are removed one by one, DELETE /v1/me/mfa/webauthn/credentials/{id}).
     */
    async disable(userId: string, f: SecondFactor, ctx: ActorContext & { ip: string | null }): Promise<void> {
      if (!(await repo.factor(userId))?.enabledAt) throw mfaNotEnabled();
      await withProvedFactor(userId, f, ctx, async (trx, via) => {
        const passkeys = await deps.webauthnRepo.countByUser(userId, trx);
        await repo.remove(trx, userId, { keepRecoveryCodes: passkeys > 0 });
        await record(trx, userId, 'mfa.disabled', ctx, { via, factor: 'totp', passkeysRemaining: passkeys });
      });
      await forget(userId);
    },

    async regenerateRecoveryCodes(userId: string, f: SecondFactor, ctx: ActorContext & { ip: string | null }): Promise<{ recoveryCodes: string[] }> {
      const codes = newRecoveryCodes();
      await withProvedFactor(userId, f, ctx, async (trx, via) => {
        await repo.replaceRecoveryCodes(trx, userId, codes.map(recoveryCodeHash));
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

    /** After a correct password: a challenge token to present with the second factor, and which factors the account has. */
    async challenge(userId: string, meta: RequestMeta): Promise<{ mfaToken: string; expiresAt: Date; factors: FactorKind[] }> {
      const mfaToken = newSecret(MFA_CHALLENGE_PREFIX);
      const expiresAt = new Date(Date.now() + CHALLENGE_TTL_MS);
      await repo.insertChallenge({ id: newId(), userId, tokenHash: sha256Hex(mfaToken), ip: meta.ip.slice(0, 64), userAgent: meta.userAgent?.slice(0, 256) ?? null, expiresAt });
      const f = await factors(userId);
      return { mfaToken, expiresAt, factors: [...(f.totp ? ['totp' as const] : []), ...(f.webauthn > 0 ? ['webauthn' as const] : []), 'recovery_code'] };
    },

    /** WebAuthn options for the second step of a sign-in: the challenge is bound to this sign-in challenge. */
    async webauthnLoginOptions(mfaToken: string) {
      if (!mfaToken.startsWith(MFA_CHALLENGE_PREFIX) || mfaToken.length > 100) throw challengeInvalid();
      const c = await inPlatformTx((trx) => repo.lockChallenge(trx, sha256Hex(mfaToken)));
      if (!c || c.consumedAt || c.expiresAt.getTime() <= Date.now() || c.attempts >= CHALLENGE_MAX_ATTEMPTS) throw challengeInvalid();
      const credentials = await deps.webauthnRepo.listByUser(c.userId);
      if (credentials.length === 0) throw webauthnNotRegistered();
      return deps.webauthn.authenticationOptions('second_factor', c.userId, credentials, c.id);
    },

    /** WebAuthn options to prove the factor again on this session (step-up, or before disabling TOTP). */
    async webauthnStepUpOptions(userId: string) {
      const credentials = await deps.webauthnRepo.listByUser(userId);
      if (credentials.length === 0) throw webauthnNotRegistered();
      return deps.webauthn.authenticationOptions('step_up', userId, credentials);
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
            const actor = { actor: { type: 'user' as const, id: c.userId, userId: c.userId }, requestId: meta.requestId, ip: meta.ip };
            const via = await checkFactor(trx, c.userId, f, actor, { purpose: 'second_factor', mfaChallengeId: c.id });
            if (via === null || via instanceof AppError) return via;
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
