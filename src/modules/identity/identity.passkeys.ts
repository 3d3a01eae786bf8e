import type { TxHandle } from '../../platform/db/database.ts';
import type { ActorContext } from '../../platform/http/actor.ts';
import { AppError } from '../../platform/http/errors.ts';
import { newId } from '../../platform/ids.ts';
import { PLATFORM_AUDIT_TENANT, type Audit } from '../audit/index.ts';
import { invalidCredentials } from './identity.errors.ts';
import { newRecoveryCodes, recoveryCodeHash, STEP_UP_MAX_AGE_SEC, type Mfa } from './identity.mfa.ts';
import type { IdentityTx, User } from './identity.repo.ts';
import type { NewSession, SessionStore } from './identity.sessions.ts';
import { credentialView, webauthnErrors, type AuthenticationResponseJSON, type RegistrationResponseJSON, type WebAuthnCore } from './identity.webauthn.ts';
import type { MfaRepo } from './mfa.repo.ts';
import { MAX_CREDENTIALS_PER_USER, type WebAuthnRepo } from './webauthn.repo.ts';

interface RequestMeta {
  ip: string;
  userAgent: string | null;
  requestId: string;
}

export interface PasskeysDeps {
  core: WebAuthnCore;
  repo: WebAuthnRepo;
  mfaRepo: MfaRepo;
  mfa: Mfa;
  audit: Audit;
  sessions: SessionStore;
  inPlatformTx: <T>(fn: (trx: IdentityTx) => Promise<T>) => Promise<T>;
  getUser: (userId: string) => Promise<User>;
  /** identity's password guards (sso: enforced domains sign in through their IdP, not with a passkey either). */
  checkLocalSignIn: (email: string) => Promise<void>;
}

export type CredentialView = ReturnType<typeof credentialView>;

/**
 * Passkeys (WebAuthn credentials) of the signed-in user: registration, list, rename, removal; and the
 * passwordless sign-in with a discoverable passkey. Every change is audited in the platform chain.
 */
export function createPasskeys(deps: PasskeysDeps) {
  const { core, repo, mfaRepo, mfa, audit, sessions, inPlatformTx } = deps;

  async function record(trx: TxHandle, userId: string, action: string, ctx: ActorContext, changes: Record<string, unknown>) {
    await audit.record(trx, { orgId: PLATFORM_AUDIT_TENANT, action, target: { type: 'user', id: userId }, changes, context: ctx });
  }

  /** Run `fn` in a platform transaction that commits even when it reports a problem (a used challenge stays used). */
  async function committed<T>(fn: (trx: IdentityTx) => Promise<T | AppError>): Promise<T> {
    const result = await inPlatformTx(fn);
    if (result instanceof AppError) throw result;
    return result;
  }

  return {
    /**
     * Options for navigator.credentials.create(). An account that already has a second factor must have
     * proved it on this session within 15 minutes (a stolen session cannot add the thief's passkey).
     */
    async registrationOptions(userId: string, sessionId: string) {
      if (await mfa.isEnabled(userId)) await mfa.assertRecentMfa(userId, sessionId, STEP_UP_MAX_AGE_SEC);
      const existing = await repo.listByUser(userId);
      if (existing.length >= MAX_CREDENTIALS_PER_USER) throw webauthnErrors.tooMany();
      return core.registrationOptions(await deps.getUser(userId), existing);
    },

    /**
     * Verifies the authenticator's attestation and stores the credential. The first second factor of an
     * account also ends its other sessions (opened without it) and returns recovery codes, shown once —
     * as TOTP enrollment does.
     */
    async register(userId: string, sessionId: string, name: string | undefined, response: RegistrationResponseJSON, ctx: ActorContext): Promise<{ credential: CredentialView; recoveryCodes?: string[] }> {
      const codes = newRecoveryCodes();
      const { credential, first, revoked } = await committed(async (trx) => {
        const verified = await core.verifyRegistration(trx, userId, response);
        if (verified instanceof AppError) return verified;
        const { info } = verified;
        if (await repo.existsCredentialId(trx, info.credential.id)) return webauthnErrors.exists();
        const before = await mfa.factors(userId, trx);
        if (before.webauthn >= MAX_CREDENTIALS_PER_USER) return webauthnErrors.tooMany();
        const first = !before.totp && before.webauthn === 0;
        const credential = await repo.insert(trx, {
          id: newId(),
          userId,
          credentialId: info.credential.id,
          publicKey: info.credential.publicKey,
          signCount: info.credential.counter,
          transports: (info.credential.transports ?? response.response.transports ?? []).slice(0, 8).map(String),
          aaguid: info.aaguid,
          deviceType: info.credentialDeviceType,
          backedUp: info.credentialBackedUp,
          name: name?.trim() || `Passkey ${before.webauthn + 1}`,
        });
        let revoked: string[] = [];
        if (first) {
          await mfaRepo.replaceRecoveryCodes(trx, userId, codes.map(recoveryCodeHash));
          await mfaRepo.markSessionMfa(trx, sessionId);
          revoked = await sessions.revoke(trx, { userId, exceptSessionId: sessionId });
        }
        await record(trx, userId, 'mfa.webauthn_registered', ctx, {
          credential: credential.id,
          name: credential.name,
          format: verified.fmt,
          aaguid: credential.aaguid,
          deviceType: credential.deviceType,
          backedUp: credential.backedUp,
          ...(first ? { mfaEnabled: true, recoveryCodes: codes.length, sessionsRevoked: revoked.length } : {}),
        });
        return { credential, first, revoked };
      });
      await sessions.invalidate(revoked);
      await mfa.forget(userId);
      return { credential: credentialView(credential), ...(first ? { recoveryCodes: codes } : {}) };
    },

    async list(userId: string): Promise<CredentialView[]> {
      return (await repo.listByUser(userId)).map(credentialView);
    },

    async rename(userId: string, id: string, name: string, ctx: ActorContext): Promise<CredentialView> {
      return credentialView(
        await committed(async (trx) => {
          const before = await repo.byId(userId, id, trx);
          if (!before) return webauthnErrors.notFound();
          const after = (await repo.rename(trx, userId, id, name.trim()))!;
          await record(trx, userId, 'mfa.webauthn_renamed', ctx, { credential: id, name: { from: before.name, to: after.name } });
          return after;
        }),
      );
    },

    /** Removal needs a recent second factor on this session; the last factor gone, the recovery codes go too. */
    async remove(userId: string, sessionId: string, id: string, ctx: ActorContext): Promise<void> {
      if (!(await repo.byId(userId, id))) throw webauthnErrors.notFound();
      await mfa.assertRecentMfa(userId, sessionId, STEP_UP_MAX_AGE_SEC);
      await committed(async (trx) => {
        const cred = await repo.byId(userId, id, trx);
        if (!cred || !(await repo.remove(trx, userId, id))) return webauthnErrors.notFound();
        const left = await mfa.factors(userId, trx);
        const mfaEnabled = left.totp || left.webauthn > 0;
        if (!mfaEnabled) await mfaRepo.removeRecoveryCodes(trx, userId);
        await record(trx, userId, 'mfa.webauthn_removed', ctx, { credential: id, name: cred.name, ...(mfaEnabled ? {} : { mfaEnabled: false }) });
        return null;
      });
      await mfa.forget(userId);
    },

    /** Options for a passwordless sign-in: no user yet, so no allowCredentials (the passkey is discoverable). */
    passwordlessOptions() {
      return core.authenticationOptions('passwordless', null, []);
    },

    /**
     * Passwordless sign-in: a user-verified assertion of a discoverable passkey opens a session whose
     * second factor counts as proved. Refused like a password sign-in for a disabled account, and for an
     * address whose org enforces SSO.
     */
    async signIn(response: AuthenticationResponseJSON, meta: RequestMeta): Promise<NewSession & { user: User }> {
      const ctx: ActorContext = { actor: { type: 'system', id: 'anonymous', userId: null }, requestId: meta.requestId, ip: meta.ip };
      // The assertion commits on its own (challenge used, counter moved) before the account checks, which
      // read other modules' state (sso's enforced domains) outside this transaction.
      const { credential } = await committed((trx) => core.verifyAssertion(trx, response, { purpose: 'passwordless' }, ctx));
      const userId = credential.userId;
      const user = await deps.getUser(userId).catch(() => null);
      if (!user || user.disabled) throw invalidCredentials();
      await deps.checkLocalSignIn(user.email);
      const s = await inPlatformTx(async (trx) => {
        const s = await sessions.create(trx, userId, meta);
        await mfaRepo.markSessionMfa(trx, s.sessionId);
        await audit.record(trx, {
          orgId: PLATFORM_AUDIT_TENANT,
          action: 'session.created',
          target: { type: 'session', id: s.sessionId },
          changes: { mfa: 'webauthn', passwordless: true, credential: credential.id },
          context: { actor: { type: 'user', id: userId, userId }, requestId: meta.requestId, ip: meta.ip },
        });
        return s;
      });
      return { ...s, user };
    },
  };
}

export type Passkeys = ReturnType<typeof createPasskeys>;
