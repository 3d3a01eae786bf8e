import { randomBytes } from 'node:crypto';
import {
  generateAuthenticationOptions,
  generateRegistrationOptions,
  verifyAuthenticationResponse,
  verifyRegistrationResponse,
  type AuthenticationResponseJSON,
  type PublicKeyCredentialCreationOptionsJSON,
  type PublicKeyCredentialRequestOptionsJSON,
  type RegistrationResponseJSON,
} from '@simplewebauthn/server';
import type { TxHandle } from '../../platform/db/database.ts';
import type { ActorContext } from '../../platform/http/actor.ts';
import { AppError } from '../../platform/http/errors.ts';
import { newId } from '../../platform/ids.ts';
import { PLATFORM_AUDIT_TENANT, type Audit } from '../audit/index.ts';
import { sha256Hex } from './identity.tokens.ts';
import { MAX_CREDENTIALS_PER_USER, type ChallengePurpose, type CredentialRow, type WebAuthnRepo } from './webauthn.repo.ts';

/** The relying party (config `webauthn`: WEBAUTHN_RP_ID, WEBAUTHN_RP_NAME, WEBAUTHN_ORIGINS). */
export interface WebAuthnSettings {
  rpId: string;
  rpName: string;
  origins: string[];
}

export type { AuthenticationResponseJSON, RegistrationResponseJSON };

const CHALLENGE_TTL_MS = 5 * 60_000;
/** What the browser is told to allow (its own ceremony timeout); the server's challenge lives a little longer. */
const CEREMONY_TIMEOUT_MS = 4 * 60_000;
/** EdDSA, ES256, RS256: what passkeys and security keys use. */
const ALGORITHMS = [-8, -7, -257];

/**
 * Errors of a WebAuthn ceremony. An assertion that fails is a failed sign-in (401); a registration that
 * fails is a bad request of a signed-in user (400), so a client does not take it for an expired session.
 */
type Ceremony = 'register' | 'assert';
const status = (c: Ceremony) => (c === 'register' ? 400 : 401);
export const webauthnErrors = {
  malformed: (c: Ceremony, why: string) => new AppError('WEBAUTHN.MALFORMED_RESPONSE', status(c), `The authenticator response is malformed: ${why}`),
  challengeInvalid: (c: Ceremony) =>
    new AppError('WEBAUTHN.CHALLENGE_INVALID', status(c), 'The challenge is unknown, expired, already used or was issued for another ceremony; request new options'),
  originMismatch: (c: Ceremony, origin: string) => new AppError('WEBAUTHN.ORIGIN_MISMATCH', status(c), `The response was made for another origin (${origin.slice(0, 200)})`),
  rpIdMismatch: (c: Ceremony) => new AppError('WEBAUTHN.RP_ID_MISMATCH', status(c), 'The response was made for another relying party (RP ID)'),
  failed: (c: Ceremony, why: string) => new AppError('WEBAUTHN.VERIFICATION_FAILED', status(c), `The authenticator response does not verify: ${why}`),
  unknownCredential: () => new AppError('WEBAUTHN.CREDENTIAL_UNKNOWN', 401, 'This credential is not registered for this account'),
  counterRegression: () =>
    new AppError('WEBAUTHN.COUNTER_REGRESSION', 401, "The authenticator's signature counter went backwards: the credential may have been cloned; it was refused and the event audited"),
  exists: () => new AppError('WEBAUTHN.CREDENTIAL_EXISTS', 409, 'This authenticator is already registered'),
  tooMany: () => new AppError('WEBAUTHN.TOO_MANY_CREDENTIALS', 409, `At most ${MAX_CREDENTIALS_PER_USER} passkeys per account; remove one first`),
  notFound: () => new AppError('WEBAUTHN.CREDENTIAL_NOT_FOUND', 404, 'Passkey not found'),
  noneRegistered: () => new AppError('WEBAUTHN.NOT_REGISTERED', 409, 'No passkey is registered for this account'),
};

/** A user id (UUID) as the 16-byte WebAuthn user handle, and back (base64url, as the response carries it). */
export const userHandleOf = (userId: string) => new Uint8Array(Buffer.from(userId.replaceAll('-', ''), 'hex'));
const userHandleB64 = (userId: string) => Buffer.from(userHandleOf(userId)).toString('base64url');

interface ClientData {
  type: string;
  challenge: string;
  origin: string;
}

function clientDataOf(c: Ceremony, clientDataJSON: string): ClientData | AppError {
  try {
    const d = JSON.parse(Buffer.from(clientDataJSON, 'base64url').toString('utf8')) as Partial<ClientData>;
    if (typeof d?.type !== 'string' || typeof d.challenge !== 'string' || typeof d.origin !== 'string') return webauthnErrors.malformed(c, 'clientDataJSON lacks type, challenge or origin');
    return d as ClientData;
  } catch {
    return webauthnErrors.malformed(c, 'clientDataJSON is not base64url-encoded JSON');
  }
}

/** The library's exceptions → problems (its messages name what did not match; they carry no secret). */
function libraryError(c: Ceremony, err: unknown): AppError {
  const e = err as Error;
  if (e?.name === 'UnexpectedRPIDHash') return webauthnErrors.rpIdMismatch(c);
  return webauthnErrors.failed(c, String(e?.message ?? err).slice(0, 200));
}

/** What a verified assertion proved. */
export interface Asserted {
  credential: CredentialRow;
}

export interface WebAuthnCoreDeps {
  repo: WebAuthnRepo;
  audit: Audit;
  settings: WebAuthnSettings;
}

/**
 * The WebAuthn ceremonies over `@simplewebauthn/server`: challenges kept server-side (SHA-256, 5 minutes,
 * single use, bound to a purpose and a user or a sign-in challenge), and the checks around the library's
 * verification (origin and RP id from config, the credential's owner, the signature counter).
 */
export function createWebAuthnCore(deps: WebAuthnCoreDeps) {
  const { repo, audit, settings } = deps;

  async function newChallenge(purpose: ChallengePurpose, userId: string | null, mfaChallengeId: string | null, challenge: string): Promise<void> {
    await repo.insertChallenge({ id: newId(), challengeHash: sha256Hex(challenge), purpose, userId, mfaChallengeId, expiresAt: new Date(Date.now() + CHALLENGE_TTL_MS) });
    // Expired challenges are deleted now and then by the writers (no job needed).
    if (Math.random() < 0.02) await repo.sweepChallenges();
  }

  /**
   * Finds the challenge the response signed, in the caller's transaction, and consumes it whatever the
   * verification's outcome (a challenge is good for one attempt). A challenge of another purpose, user or
   * sign-in is not consumed (it is not this ceremony's) and refused alike.
   */
  async function takeChallenge(trx: TxHandle, c: Ceremony, clientDataJSON: string, expect: { purpose: ChallengePurpose; userId?: string; mfaChallengeId?: string }): Promise<ClientData | AppError> {
    const data = clientDataOf(c, clientDataJSON);
    if (data instanceof AppError) return data;
    if (data.challenge.length > 512) return webauthnErrors.challengeInvalid(c);
    const row = await repo.lockChallenge(trx, sha256Hex(data.challenge));
    if (!row || row.consumedAt || row.expiresAt.getTime() <= Date.now()) return webauthnErrors.challengeInvalid(c);
    if (row.purpose !== expect.purpose || (expect.userId !== undefined && row.userId !== expect.userId) || (expect.mfaChallengeId !== undefined && row.mfaChallengeId !== expect.mfaChallengeId)) {
      return webauthnErrors.challengeInvalid(c);
    }
    await repo.consumeChallenge(trx, row.id);
    if (data.type !== (c === 'register' ? 'webauthn.create' : 'webauthn.get')) return webauthnErrors.failed(c, `unexpected ceremony type "${data.type.slice(0, 40)}"`);
    if (!settings.origins.includes(data.origin)) return webauthnErrors.originMismatch(c, data.origin);
    return data;
  }

  return {
    settings,

    /** Options for navigator.credentials.create(); the challenge is stored for this user. */
    async registrationOptions(user: { id: string; email: string; name: string }, existing: CredentialRow[]): Promise<PublicKeyCredentialCreationOptionsJSON> {
      const options = await generateRegistrationOptions({
        rpName: settings.rpName,
        rpID: settings.rpId,
        userName: user.email,
        userID: userHandleOf(user.id),
        userDisplayName: user.name,
        challenge: new Uint8Array(randomBytes(32)),
        timeout: CEREMONY_TIMEOUT_MS,
        attestationType: 'none',
        excludeCredentials: existing.map((cred) => ({ id: cred.credentialId, transports: cred.transports })),
        // Discoverable where the authenticator can (passwordless sign-in); user verification when it can.
        authenticatorSelection: { residentKey: 'preferred', userVerification: 'preferred' },
        supportedAlgorithmIDs: ALGORITHMS,
      });
      await newChallenge('register', user.id, null, options.challenge);
      return options;
    },

    /** Options for navigator.credentials.get(): the user's credentials, or none (a discoverable passkey picks itself). */
    async authenticationOptions(purpose: Exclude<ChallengePurpose, 'register'>, userId: string | null, credentials: CredentialRow[], mfaChallengeId: string | null = null): Promise<PublicKeyCredentialRequestOptionsJSON> {
      const options = await generateAuthenticationOptions({
        rpID: settings.rpId,
        challenge: new Uint8Array(randomBytes(32)),
        timeout: CEREMONY_TIMEOUT_MS,
        allowCredentials: credentials.map((cred) => ({ id: cred.credentialId, transports: cred.transports })),
        // Passwordless: the passkey is both factors (possession + PIN/biometric); as a second factor presence is enough.
        userVerification: purpose === 'passwordless' ? 'required' : 'preferred',
      });
      await newChallenge(purpose, userId, mfaChallengeId, options.challenge);
      return options;
    },

    /** Verifies a registration in the caller's transaction; the new credential's data, or why not. */
    async verifyRegistration(trx: TxHandle, userId: string, response: RegistrationResponseJSON) {
      const data = await takeChallenge(trx, 'register', response.response.clientDataJSON, { purpose: 'register', userId });
      if (data instanceof AppError) return data;
      let result;
      try {
        result = await verifyRegistrationResponse({
          response,
          expectedChallenge: data.challenge,
          expectedOrigin: settings.origins,
          expectedRPID: settings.rpId,
          requireUserVerification: false,
          supportedAlgorithmIDs: ALGORITHMS,
        });
      } catch (err) {
        return libraryError('register', err);
      }
      if (!result.verified) return webauthnErrors.failed('register', 'the attestation does not verify');
      const info = result.registrationInfo;
      if (info.credential.id !== response.id) return webauthnErrors.malformed('register', 'the credential id does not match the authenticator data');
      return { info, fmt: info.fmt };
    },

    /**
     * Verifies an assertion in the caller's transaction: the challenge (purpose, user, sign-in), the
     * credential (registered, and the user's when the user is known; for a passwordless sign-in the user
     * handle must name its owner), origin, RP id, signature, user verification when required, and the
     * signature counter — which must grow when either side has seen one. A counter that did not grow
     * (with a valid signature: a cloned authenticator) is refused and audited in the platform chain,
     * in this transaction, which the caller commits.
     */
    async verifyAssertion(
      trx: TxHandle,
      response: AuthenticationResponseJSON,
      expect: { purpose: Exclude<ChallengePurpose, 'register'>; userId?: string; mfaChallengeId?: string },
      ctx: ActorContext,
    ): Promise<Asserted | AppError> {
      const data = await takeChallenge(trx, 'assert', response.response.clientDataJSON, expect);
      if (data instanceof AppError) return data;
      const cred = await repo.lockByCredentialId(trx, response.id);
      if (!cred || (expect.userId !== undefined && cred.userId !== expect.userId)) return webauthnErrors.unknownCredential();
      if (expect.purpose === 'passwordless' && response.response.userHandle !== userHandleB64(cred.userId)) return webauthnErrors.unknownCredential();
      let result;
      try {
        result = await verifyAuthenticationResponse({
          response,
          expectedChallenge: data.challenge,
          expectedOrigin: settings.origins,
          expectedRPID: settings.rpId,
          // The counter is compared below, after the signature: only a signed counter is evidence of a clone.
          credential: { id: cred.credentialId, publicKey: cred.publicKey, counter: 0, transports: cred.transports as never },
          requireUserVerification: expect.purpose === 'passwordless',
        });
      } catch (err) {
        return libraryError('assert', err);
      }
      if (!result.verified) return webauthnErrors.failed('assert', 'the signature does not verify');
      const next = result.authenticationInfo.newCounter;
      if ((next > 0 || cred.signCount > 0) && next <= cred.signCount) {
        await audit.record(trx, {
          orgId: PLATFORM_AUDIT_TENANT,
          action: 'mfa.webauthn_counter_regression',
          target: { type: 'user', id: cred.userId },
          changes: { credential: cred.id, name: cred.name, storedCounter: cred.signCount, presentedCounter: next, purpose: expect.purpose },
          context: ctx.actor.type === 'system' ? { ...ctx, actor: { type: 'user', id: cred.userId, userId: cred.userId } } : ctx,
        });
        return webauthnErrors.counterRegression();
      }
      await repo.recordUse(trx, cred.id, next, result.authenticationInfo.credentialBackedUp);
      return { credential: cred };
    },
  };
}

export type WebAuthnCore = ReturnType<typeof createWebAuthnCore>;

/** A credential as the API shows it (never its public key). */
export function credentialView(c: CredentialRow) {
  return {
    id: c.id,
    credentialId: c.credentialId,
    name: c.name,
    deviceType: c.deviceType,
    backedUp: c.backedUp,
    transports: c.transports,
    aaguid: c.aaguid,
    createdAt: c.createdAt,
    lastUsedAt: c.lastUsedAt,
  };
}
