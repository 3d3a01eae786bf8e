import { Type } from '@sinclair/typebox';
import { actorOf } from '../../platform/http/actor.ts';
import { AppError } from '../../platform/http/errors.ts';
import { AUTHENTICATED, PLATFORM_ADMIN } from '../../platform/http/auth.ts';
import { DateTime, Uuid } from '../../platform/http/schemas.ts';
import type { App } from '../../platform/http/server.ts';
import { Email } from './identity.schemas.ts';
import { userPrincipal } from './identity.routes.ts';
import type { IdentityService } from './identity.service.ts';

const bearer = [{ bearer: [] }];
/** Erasing one's own account is a sensitive action: the session must have proved its second factor this recently. */
const ERASE_STEP_UP_SEC = 900;

const ExportLink = Type.Object(
  {
    url: Type.String({ description: 'Expiring download link (JSON document)' }),
    filename: Type.String(),
    bytes: Type.Integer(),
    expiresAt: DateTime(),
  },
  { additionalProperties: false },
);

const Erased = Type.Object(
  { userId: Uuid(), erasedAt: DateTime(), auditRecordsErased: Type.Integer({ description: 'Audit personal-data records blanked (the events and the chain stay)' }) },
  { additionalProperties: false },
);

/** GDPR art. 15 (export) and art. 17 (erasure): the user for themselves, a platform admin for anyone. */
export function dataRightsRoutes(identity: IdentityService): (app: App) => Promise<void> {
  const rights = identity.dataRights;
  return async (app: App) => {
    app.post(
      '/me/data-export',
      {
        config: { permission: AUTHENTICATED },
        schema: {
          tags: ['account'],
          summary: 'Export everything Plinth holds about me (JSON, through an expiring link)',
          security: bearer,
          response: { 201: ExportLink },
        },
      },
      async (request, reply) => {
        const p = userPrincipal(request);
        return reply.code(201).send(await rights.exportUser(p.userId, actorOf(request)));
      },
    );

    app.post(
      '/me/erase',
      {
        config: { permission: AUTHENTICATED },
        schema: {
          tags: ['account'],
          summary: 'Erase my account and personal data (irreversible; needs a recent second factor when enrolled)',
          security: bearer,
          body: Type.Object({ confirmEmail: Email }, { additionalProperties: false }),
          response: { 200: Erased },
        },
      },
      async (request) => {
        const p = userPrincipal(request);
        const { confirmEmail } = request.body as { confirmEmail: string };
        const user = await identity.getUser(p.userId);
        if (user.email !== confirmEmail.trim().toLowerCase()) throw new AppError('IDENTITY.CONFIRMATION_MISMATCH', 422, 'confirmEmail must be the account’s e-mail address');
        await identity.mfa.assertRecentMfa(p.userId, p.sessionId, ERASE_STEP_UP_SEC);
        return rights.eraseUser(p.userId, actorOf(request));
      },
    );

    app.post(
      '/admin/users/:userId/data-export',
      {
        config: { permission: PLATFORM_ADMIN },
        schema: {
          tags: ['admin'],
          summary: "Export a user's data (data subject access request)",
          security: bearer,
          params: Type.Object({ userId: Uuid() }),
          response: { 201: ExportLink },
        },
      },
      async (request, reply) => {
        const { userId } = request.params as { userId: string };
        return reply.code(201).send(await rights.exportUser(userId, actorOf(request)));
      },
    );

    app.post(
      '/admin/users/:userId/erase',
      {
        config: { permission: PLATFORM_ADMIN },
        schema: {
          tags: ['admin'],
          summary: "Erase a user's account and personal data (GDPR art. 17; irreversible)",
          security: bearer,
          params: Type.Object({ userId: Uuid() }),
          response: { 200: Erased },
        },
      },
      async (request) => {
        const { userId } = request.params as { userId: string };
        return rights.eraseUser(userId, actorOf(request));
      },
    );
  };
}
