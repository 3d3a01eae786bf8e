import { Type } from '@sinclair/typebox';
import type { FastifyRequest } from 'fastify';
import { actorOf } from '../../platform/http/actor.ts';
import { AUTHENTICATED, PLATFORM_ADMIN, principalOf, type Principal } from '../../platform/http/auth.ts';
import { DateTime, Page, Uuid } from '../../platform/http/schemas.ts';
import type { App } from '../../platform/http/server.ts';
import { sessionRequired } from './identity.errors.ts';
import { Email, Password, SessionSchema, SessionTokenSchema, UserSchema } from './identity.schemas.ts';
import type { IdentityService, RequestMeta } from './identity.service.ts';

const bearer = [{ bearer: [] }];

/** Account routes act for a person: an API key (which belongs to an org) may not use them. */
export function userPrincipal(request: FastifyRequest): Principal & { sessionId: string } {
  const p = principalOf(request);
  if (p.kind !== 'user' || !p.sessionId) throw sessionRequired();
  return p as Principal & { sessionId: string };
}

export const requestMeta = (request: FastifyRequest): RequestMeta => ({
  ip: request.ip,
  userAgent: typeof request.headers['user-agent'] === 'string' ? request.headers['user-agent'] : null,
  requestId: request.id,
});

export function identityRoutes(identity: IdentityService): (app: App) => Promise<void> {
  return async (app: App) => {
    app.post(
      '/auth/login',
      {
        // sensitive: the union response (session or MFA challenge) hides `token` from the automatic check
        config: { public: true, sensitive: true },
        schema: {
          tags: ['auth'],
          summary: 'Sign in with email and password; returns a new session token',
          body: Type.Object({ email: Email, password: Password }, { additionalProperties: false }),
          response: {
            200: Type.Union([
              Type.Object({ ...SessionTokenSchema.properties, user: UserSchema }, { additionalProperties: false }),
              Type.Object(
                {
                  mfaRequired: Type.Literal(true),
                  mfaToken: Type.String({ description: 'Send it with a code or a passkey assertion to /v1/auth/login/mfa' }),
                  expiresAt: DateTime(),
                  factors: Type.Array(Type.Union([Type.Literal('totp'), Type.Literal('webauthn'), Type.Literal('recovery_code')]), { description: 'What the account can answer with' }),
                },
                { additionalProperties: false, description: 'The account has a second factor: no session yet' },
              ),
            ]),
          },
        },
      },
      async (request) => {
        const { email, password } = request.body as { email: string; password: string };
        const result = await identity.login(email, password, requestMeta(request));
        if (result.mfaRequired) return { mfaRequired: true as const, mfaToken: result.mfaToken, expiresAt: result.expiresAt, factors: result.factors };
        return { token: result.token, expiresAt: result.expiresAt, user: result.user };
      },
    );

    app.post(
      '/auth/logout',
      {
        config: { permission: AUTHENTICATED },
        schema: { tags: ['auth'], summary: 'Revoke the current session', security: bearer, response: { 204: Type.Null() } },
      },
      async (request, reply) => {
        const p = userPrincipal(request);
        await identity.logout(p, actorOf(request));
        return reply.code(204).send(null);
      },
    );

    app.post(
      '/me/password',
      {
        config: { permission: AUTHENTICATED },
        schema: {
          tags: ['me'],
          summary: 'Change the password; revokes every session and returns a new one',
          security: bearer,
          body: Type.Object({ currentPassword: Password, newPassword: Password }, { additionalProperties: false }),
          response: { 200: SessionTokenSchema },
        },
      },
      async (request) => {
        const p = userPrincipal(request);
        const { currentPassword, newPassword } = request.body as { currentPassword: string; newPassword: string };
        const s = await identity.changePassword(p, currentPassword, newPassword, requestMeta(request), actorOf(request));
        return { token: s.token, expiresAt: s.expiresAt };
      },
    );

    app.get(
      '/me/sessions',
      {
        config: { permission: AUTHENTICATED },
        schema: { tags: ['me'], summary: 'List my active sessions (newest first, at most 100)', security: bearer, response: { 200: Page(SessionSchema) } },
      },
      async (request) => {
        const p = userPrincipal(request);
        const sessions = await identity.listSessions(p.userId);
        return {
          data: sessions.map((s) => ({ ...s, current: s.id === p.sessionId })),
          nextCursor: null,
        };
      },
    );

    app.delete(
      '/me/sessions',
      {
        config: { permission: AUTHENTICATED },
        schema: {
          tags: ['me'],
          summary: 'Revoke all my other sessions (sign out everywhere else)',
          security: bearer,
          response: { 200: Type.Object({ revoked: Type.Integer() }, { additionalProperties: false }) },
        },
      },
      async (request) => {
        const p = userPrincipal(request);
        const revoked = await identity.revokeOtherSessions(p, actorOf(request));
        return { revoked };
      },
    );

    app.delete(
      '/me/sessions/:sessionId',
      {
        config: { permission: AUTHENTICATED },
        schema: {
          tags: ['me'],
          summary: 'Revoke one of my sessions',
          security: bearer,
          params: Type.Object({ sessionId: Uuid() }),
          response: { 204: Type.Null() },
        },
      },
      async (request, reply) => {
        const p = userPrincipal(request);
        const { sessionId } = request.params as { sessionId: string };
        await identity.revokeSession(p, sessionId, actorOf(request));
        return reply.code(204).send(null);
      },
    );

    for (const [verb, disabled] of [['disable', true], ['enable', false]] as const) {
      app.post(
        `/admin/users/:userId/${verb}`,
        {
          config: { permission: PLATFORM_ADMIN },
          schema: {
            tags: ['admin'],
            summary: disabled ? 'Disable an account (revokes its sessions and API keys at once)' : 'Re-enable an account',
            security: bearer,
            params: Type.Object({ userId: Uuid() }),
            response: { 200: UserSchema },
          },
        },
        async (request) => {
          const { userId } = request.params as { userId: string };
          return identity.setDisabled(userId, disabled, actorOf(request));
        },
      );
    }
  };
}
