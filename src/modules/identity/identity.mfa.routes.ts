import { Type } from '@sinclair/typebox';
import { actorOf } from '../../platform/http/actor.ts';
import { AUTHENTICATED } from '../../platform/http/auth.ts';
import { DateTime } from '../../platform/http/schemas.ts';
import type { App } from '../../platform/http/server.ts';
import { requestMeta, userPrincipal } from './identity.routes.ts';
import { UserSchema } from './identity.schemas.ts';
import type { SecondFactor } from './identity.mfa.ts';
import type { IdentityService } from './identity.service.ts';
import { AuthenticationResponseBody } from './identity.webauthn.routes.ts';

const bearer = [{ bearer: [] }];
// Six digits; checked in code (identity.mfa.ts) rather than by a schema pattern.
const TotpCode = Type.String({ minLength: 6, maxLength: 6, description: 'Six digits from the authenticator app' });
const RecoveryCode = Type.String({ minLength: 8, maxLength: 20, description: 'One of the recovery codes (each works once)' });
const WebAuthnAssertion = { ...AuthenticationResponseBody, description: 'A passkey assertion (options from the matching …webauthn…options route)' };
/** A TOTP code, a recovery code or a passkey assertion. */
const SecondFactorBody = Type.Object(
  { code: Type.Optional(TotpCode), recoveryCode: Type.Optional(RecoveryCode), webauthn: Type.Optional(WebAuthnAssertion) },
  { additionalProperties: false, minProperties: 1, maxProperties: 1 },
);
const RecoveryCodes = Type.Object({ recoveryCodes: Type.Array(Type.String()) }, { additionalProperties: false });

/** TOTP enrollment, recovery codes, step-up, and the second step of a password sign-in. */
export function mfaRoutes(identity: IdentityService): (app: App) => Promise<void> {
  const { mfa } = identity;
  return async (app: App) => {
    // The sign-in answer is a new session token: never stored for Idempotency-Key replay.
    app.addHook('onRequest', async (request) => {
      if (request.routeOptions.config?.public) delete request.headers['idempotency-key'];
    });

    app.post(
      '/auth/login/mfa',
      {
        config: { public: true },
        schema: {
          tags: ['auth'],
          summary: 'Second step of a sign-in with MFA: the challenge from /auth/login plus a TOTP code, a recovery code or a passkey assertion',
          body: Type.Object(
            { mfaToken: Type.String({ minLength: 1, maxLength: 100 }), code: Type.Optional(TotpCode), recoveryCode: Type.Optional(RecoveryCode), webauthn: Type.Optional(WebAuthnAssertion) },
            { additionalProperties: false, required: ['mfaToken'], minProperties: 2, maxProperties: 2 },
          ),
          response: { 200: Type.Object({ token: Type.String(), expiresAt: DateTime(), user: UserSchema }, { additionalProperties: false }) },
        },
      },
      async (request) => {
        const { mfaToken, ...factor } = request.body as SecondFactor & { mfaToken: string };
        const s = await mfa.completeChallenge(mfaToken, factor, requestMeta(request));
        return { token: s.token, expiresAt: s.expiresAt, user: await identity.getUser(s.userId) };
      },
    );

    app.get(
      '/me/mfa',
      {
        config: { permission: AUTHENTICATED },
        schema: {
          tags: ['me'],
          summary: 'My second factors: enabled (TOTP or a passkey), TOTP, passkeys, recovery codes left',
          security: bearer,
          response: { 200: Type.Object({ enabled: Type.Boolean(), totp: Type.Boolean(), webauthnCredentials: Type.Integer(), recoveryCodesRemaining: Type.Integer() }, { additionalProperties: false }) },
        },
      },
      async (request) => mfa.status(userPrincipal(request).userId),
    );

    app.post(
      '/me/mfa/totp',
      {
        config: { permission: AUTHENTICATED },
        schema: {
          tags: ['me'],
          summary: 'Start TOTP enrollment: a new secret and its otpauth:// URL (enabled once a code is confirmed; with a passkey, needs a recent step-up)',
          security: bearer,
          response: { 200: Type.Object({ secret: Type.String(), otpauthUrl: Type.String() }, { additionalProperties: false }) },
        },
      },
      async (request) => {
        const p = userPrincipal(request);
        return mfa.startEnrollment(p.userId, p.sessionId, (await identity.getUser(p.userId)).email, actorOf(request));
      },
    );

    app.post(
      '/me/mfa/totp/confirm',
      {
        config: { permission: AUTHENTICATED, sensitive: true },
        schema: {
          tags: ['me'],
          summary: 'Confirm enrollment with a code: enables MFA, signs out my other sessions, returns recovery codes (shown once)',
          security: bearer,
          body: Type.Object({ code: TotpCode }, { additionalProperties: false }),
          response: { 200: RecoveryCodes },
        },
      },
      async (request) => {
        const p = userPrincipal(request);
        return mfa.confirmEnrollment(p.userId, p.sessionId, (request.body as { code: string }).code, actorOf(request));
      },
    );

    app.post(
      '/me/mfa/recovery-codes',
      {
        config: { permission: AUTHENTICATED, sensitive: true },
        schema: { tags: ['me'], summary: 'Replace my recovery codes (needs a current code)', security: bearer, body: SecondFactorBody, response: { 200: RecoveryCodes } },
      },
      async (request) => mfa.regenerateRecoveryCodes(userPrincipal(request).userId, request.body as SecondFactor, actorOf(request)),
    );

    app.post(
      '/me/mfa/disable',
      {
        config: { permission: AUTHENTICATED },
        schema: { tags: ['me'], summary: 'Turn MFA off (needs a current code)', security: bearer, body: SecondFactorBody, response: { 204: Type.Null() } },
      },
      async (request, reply) => {
        await mfa.disable(userPrincipal(request).userId, request.body as SecondFactor, actorOf(request));
        return reply.code(204).send(null);
      },
    );

    app.post(
      '/me/mfa/step-up',
      {
        config: { permission: AUTHENTICATED },
        schema: { tags: ['me'], summary: 'Prove the second factor again for this session (before sensitive actions)', security: bearer, body: SecondFactorBody, response: { 204: Type.Null() } },
      },
      async (request, reply) => {
        const p = userPrincipal(request);
        await mfa.stepUp(p.userId, p.sessionId, request.body as SecondFactor, actorOf(request));
        return reply.code(204).send(null);
      },
    );
  };
}
