import { Type } from '@sinclair/typebox';
import { actorOf } from '../../platform/http/actor.ts';
import { AUTHENTICATED } from '../../platform/http/auth.ts';
import { DateTime, Uuid } from '../../platform/http/schemas.ts';
import type { App } from '../../platform/http/server.ts';
import { requestMeta, userPrincipal } from './identity.routes.ts';
import { UserSchema } from './identity.schemas.ts';
import type { IdentityService } from './identity.service.ts';
import type { AuthenticationResponseJSON, RegistrationResponseJSON } from './identity.webauthn.ts';

const bearer = [{ bearer: [] }];
const B64 = (maxLength: number, description?: string) => Type.String({ maxLength, pattern: '^[A-Za-z0-9_-]*$', description });
const Transports = Type.Array(Type.String({ maxLength: 32 }), { maxItems: 10 });
const ExtensionResults = Type.Object({}, { additionalProperties: true, maxProperties: 20, description: 'clientExtensionResults, as the browser returns them' });
const CredentialDescriptor = Type.Object({ id: Type.String(), type: Type.String(), transports: Type.Optional(Type.Array(Type.String())) });

/** PublicKeyCredential.toJSON() of navigator.credentials.create() (WebAuthn L3), as @simplewebauthn/browser sends it. */
export const RegistrationResponseBody = Type.Object(
  {
    id: B64(1400, 'The credential id (base64url)'),
    rawId: B64(1400),
    type: Type.Literal('public-key'),
    response: Type.Object(
      {
        clientDataJSON: B64(8192),
        attestationObject: B64(65536),
        authenticatorData: Type.Optional(B64(65536)),
        transports: Type.Optional(Transports),
        publicKeyAlgorithm: Type.Optional(Type.Integer()),
        publicKey: Type.Optional(B64(8192)),
      },
      { additionalProperties: false },
    ),
    authenticatorAttachment: Type.Optional(Type.String({ maxLength: 32 })),
    clientExtensionResults: ExtensionResults,
  },
  { additionalProperties: false },
);

/** PublicKeyCredential.toJSON() of navigator.credentials.get() (WebAuthn L3). */
export const AuthenticationResponseBody = Type.Object(
  {
    id: B64(1400, 'The credential id (base64url)'),
    rawId: B64(1400),
    type: Type.Literal('public-key'),
    response: Type.Object(
      {
        clientDataJSON: B64(8192),
        authenticatorData: B64(65536),
        signature: B64(2048),
        userHandle: Type.Optional(B64(256)),
      },
      { additionalProperties: false },
    ),
    authenticatorAttachment: Type.Optional(Type.String({ maxLength: 32 })),
    clientExtensionResults: ExtensionResults,
  },
  { additionalProperties: false },
);

/** What navigator.credentials.create({ publicKey }) takes (after base64url decoding, e.g. by @simplewebauthn/browser). */
const CreationOptions = Type.Object(
  {
    rp: Type.Object({ id: Type.Optional(Type.String()), name: Type.String() }),
    user: Type.Object({ id: Type.String(), name: Type.String(), displayName: Type.String() }),
    challenge: Type.String(),
    pubKeyCredParams: Type.Array(Type.Object({ type: Type.String(), alg: Type.Integer() })),
    timeout: Type.Optional(Type.Integer()),
    excludeCredentials: Type.Optional(Type.Array(CredentialDescriptor)),
    authenticatorSelection: Type.Optional(Type.Object({}, { additionalProperties: true })),
    attestation: Type.Optional(Type.String()),
    hints: Type.Optional(Type.Array(Type.String())),
    extensions: Type.Optional(Type.Object({}, { additionalProperties: true })),
  },
  { additionalProperties: true, description: 'PublicKeyCredentialCreationOptionsJSON' },
);

/** What navigator.credentials.get({ publicKey }) takes. */
export const RequestOptions = Type.Object(
  {
    challenge: Type.String(),
    timeout: Type.Optional(Type.Integer()),
    rpId: Type.Optional(Type.String()),
    allowCredentials: Type.Optional(Type.Array(CredentialDescriptor)),
    userVerification: Type.Optional(Type.String()),
    hints: Type.Optional(Type.Array(Type.String())),
    extensions: Type.Optional(Type.Object({}, { additionalProperties: true })),
  },
  { additionalProperties: true, description: 'PublicKeyCredentialRequestOptionsJSON' },
);

const CredentialName = Type.String({ minLength: 1, maxLength: 100 });
const Credential = Type.Object(
  {
    id: Uuid(),
    credentialId: Type.String({ description: 'The WebAuthn credential id (base64url)' }),
    name: Type.String(),
    deviceType: Type.String({ description: 'singleDevice or multiDevice (a synced passkey)' }),
    backedUp: Type.Boolean(),
    transports: Type.Array(Type.String()),
    aaguid: Type.Union([Type.String(), Type.Null()]),
    createdAt: DateTime(),
    lastUsedAt: Type.Union([DateTime(), Type.Null()]),
  },
  { additionalProperties: false },
);
const CredentialParams = Type.Object({ credentialId: Uuid() });

/** Passkeys: registration and management (signed-in user), passwordless sign-in (public). */
export function webauthnRoutes(identity: IdentityService): (app: App) => Promise<void> {
  const { passkeys, mfa } = identity;
  return async (app: App) => {
    // The sign-in answer is a new session token: never stored for Idempotency-Key replay.
    app.addHook('onRequest', async (request) => {
      if (request.routeOptions.config?.public) delete request.headers['idempotency-key'];
    });

    app.post(
      '/me/mfa/webauthn/registration-options',
      {
        config: { permission: AUTHENTICATED },
        schema: {
          tags: ['me'],
          summary: 'Start registering a passkey: options for navigator.credentials.create() (needs a recent second factor when MFA is on)',
          security: bearer,
          response: { 200: CreationOptions },
        },
      },
      async (request) => {
        const p = userPrincipal(request);
        return passkeys.registrationOptions(p.userId, p.sessionId);
      },
    );

    app.post(
      '/me/mfa/webauthn/credentials',
      {
        config: { permission: AUTHENTICATED, sensitive: true },
        schema: {
          tags: ['me'],
          summary: 'Finish registering a passkey with the authenticator response; the first second factor also returns recovery codes (shown once)',
          security: bearer,
          body: Type.Object({ name: Type.Optional(CredentialName), response: RegistrationResponseBody }, { additionalProperties: false }),
          response: { 201: Type.Object({ credential: Credential, recoveryCodes: Type.Optional(Type.Array(Type.String())) }, { additionalProperties: false }) },
        },
      },
      async (request, reply) => {
        const p = userPrincipal(request);
        const body = request.body as { name?: string; response: RegistrationResponseJSON };
        return reply.code(201).send(await passkeys.register(p.userId, p.sessionId, body.name, body.response, actorOf(request)));
      },
    );

    app.get(
      '/me/mfa/webauthn/credentials',
      {
        config: { permission: AUTHENTICATED },
        schema: { tags: ['me'], summary: 'My passkeys', security: bearer, response: { 200: Type.Object({ data: Type.Array(Credential) }, { additionalProperties: false }) } },
      },
      async (request) => ({ data: await passkeys.list(userPrincipal(request).userId) }),
    );

    app.patch(
      '/me/mfa/webauthn/credentials/:credentialId',
      {
        config: { permission: AUTHENTICATED },
        schema: {
          tags: ['me'],
          summary: 'Rename one of my passkeys',
          security: bearer,
          params: CredentialParams,
          body: Type.Object({ name: CredentialName }, { additionalProperties: false }),
          response: { 200: Credential },
        },
      },
      async (request) => {
        const { credentialId } = request.params as { credentialId: string };
        return passkeys.rename(userPrincipal(request).userId, credentialId, (request.body as { name: string }).name, actorOf(request));
      },
    );

    app.delete(
      '/me/mfa/webauthn/credentials/:credentialId',
      {
        config: { permission: AUTHENTICATED },
        schema: { tags: ['me'], summary: 'Remove one of my passkeys (needs a second factor proved on this session within 15 minutes)', security: bearer, params: CredentialParams, response: { 204: Type.Null() } },
      },
      async (request, reply) => {
        const p = userPrincipal(request);
        await passkeys.remove(p.userId, p.sessionId, (request.params as { credentialId: string }).credentialId, actorOf(request));
        return reply.code(204).send(null);
      },
    );

    app.post(
      '/me/mfa/webauthn/step-up-options',
      {
        config: { permission: AUTHENTICATED },
        schema: {
          tags: ['me'],
          summary: 'Options to prove my passkey again (then POST /v1/me/mfa/step-up, /disable or /recovery-codes with `webauthn`)',
          security: bearer,
          response: { 200: RequestOptions },
        },
      },
      async (request) => mfa.webauthnStepUpOptions(userPrincipal(request).userId),
    );

    app.post(
      '/auth/login/mfa/webauthn-options',
      {
        config: { public: true },
        schema: {
          tags: ['auth'],
          summary: 'Second step of a sign-in with a passkey: options for navigator.credentials.get(), bound to the sign-in challenge',
          body: Type.Object({ mfaToken: Type.String({ minLength: 1, maxLength: 100 }) }, { additionalProperties: false }),
          response: { 200: RequestOptions },
        },
      },
      async (request) => mfa.webauthnLoginOptions((request.body as { mfaToken: string }).mfaToken),
    );

    app.post(
      '/auth/passkey/options',
      {
        config: { public: true },
        schema: { tags: ['auth'], summary: 'Passwordless sign-in, step 1: options for navigator.credentials.get() (a discoverable passkey, user verification required)', response: { 200: RequestOptions } },
      },
      async () => passkeys.passwordlessOptions(),
    );

    app.post(
      '/auth/passkey',
      {
        config: { public: true, sensitive: true },
        schema: {
          tags: ['auth'],
          summary: 'Passwordless sign-in, step 2: the passkey assertion; returns a new session (its second factor counts as proved)',
          body: Type.Object({ response: AuthenticationResponseBody }, { additionalProperties: false }),
          response: { 200: Type.Object({ token: Type.String(), expiresAt: DateTime(), user: UserSchema }, { additionalProperties: false }) },
        },
      },
      async (request) => {
        const s = await passkeys.signIn((request.body as { response: AuthenticationResponseJSON }).response, requestMeta(request));
        return { token: s.token, expiresAt: s.expiresAt, user: s.user };
      },
    );
  };
}
