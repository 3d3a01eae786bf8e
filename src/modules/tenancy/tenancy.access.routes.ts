import { Type } from '@sinclair/typebox';
import type { FastifyRequest } from 'fastify';
import { actorOf } from '../../platform/http/actor.ts';
import { accessOf, AUTHENTICATED, principalOf } from '../../platform/http/auth.ts';
import { DEFAULT_PAGE_SIZE } from '../../platform/http/pagination.ts';
import { Page, Uuid } from '../../platform/http/schemas.ts';
import type { App } from '../../platform/http/server.ts';
import { Email, userPrincipal } from '../identity/index.ts';
import { PERMISSIONS, type Role } from './tenancy.roles.ts';
import { ApiKeySchema, bearer, InvitationSchema, ListQuery, MembershipSchema, OrgParams, RoleSchema, ScopeSchema } from './tenancy.schemas.ts';
import type { TenancyUseCases } from './use-cases/index.ts';

/** Invitations and API keys: the two ways into an org besides creating it. */
export function accessRoutes(deps: Pick<TenancyUseCases, 'invitations' | 'apiKeys' | 'assertMayGrant'>): (app: App) => Promise<void> {
  const { invitations, apiKeys } = deps;
  return async (app: App) => {
    app.post(
      '/orgs/:orgId/invitations',
      {
        config: { permission: PERMISSIONS.membersManage },
        schema: {
          tags: ['invitations'],
          summary: 'Invite someone by email; the token is returned only here',
          security: bearer,
          params: OrgParams,
          body: Type.Object(
            { email: Email, role: RoleSchema, expiresInHours: Type.Optional(Type.Integer({ minimum: 1, maximum: 720, default: 168 })) },
            { additionalProperties: false },
          ),
          response: { 201: Type.Object({ ...InvitationSchema.properties, token: Type.String() }, { additionalProperties: false }) },
        },
      },
      async (request, reply) => {
        const access = accessOf(request);
        const body = request.body as { email: string; role: Role; expiresInHours: number };
        deps.assertMayGrant(body.role, access.permissions);
        const inv = await invitations.create(access.orgId, body, userPrincipalId(request), actorOf(request));
        return reply.code(201).send(inv);
      },
    );

    app.get(
      '/orgs/:orgId/invitations',
      {
        config: { permission: PERMISSIONS.membersManage },
        schema: { tags: ['invitations'], summary: 'List invitations', security: bearer, params: OrgParams, querystring: ListQuery, response: { 200: Page(InvitationSchema) } },
      },
      async (request) => {
        const q = request.query as { cursor?: string; limit?: number };
        return invitations.list(accessOf(request).orgId, { ...q, limit: q.limit ?? DEFAULT_PAGE_SIZE });
      },
    );

    app.delete(
      '/orgs/:orgId/invitations/:invitationId',
      {
        config: { permission: PERMISSIONS.membersManage },
        schema: {
          tags: ['invitations'],
          summary: 'Revoke a pending invitation',
          security: bearer,
          params: Type.Object({ orgId: Uuid(), invitationId: Uuid() }),
          response: { 204: Type.Null() },
        },
      },
      async (request, reply) => {
        await invitations.revoke(accessOf(request).orgId, (request.params as { invitationId: string }).invitationId, actorOf(request));
        return reply.code(204).send(null);
      },
    );

    app.post(
      '/invitations/:token/accept',
      {
        config: { permission: AUTHENTICATED },
        schema: {
          tags: ['invitations'],
          summary: 'Accept an invitation as the signed-in user (whose email it was sent to)',
          security: bearer,
          params: Type.Object({ token: Type.String({ minLength: 10, maxLength: 120, pattern: '^[A-Za-z0-9_-]+$' }) }),
          response: { 200: MembershipSchema },
        },
      },
      async (request) => {
        const p = userPrincipal(request);
        return invitations.accept((request.params as { token: string }).token, p.userId, actorOf(request));
      },
    );

    app.post(
      '/orgs/:orgId/api-keys',
      {
        config: { permission: PERMISSIONS.apiKeysManage },
        schema: {
          tags: ['api-keys'],
          summary: 'Create an API key; the secret is returned only here',
          security: bearer,
          params: OrgParams,
          body: Type.Object(
            {
              name: Type.String({ minLength: 1, maxLength: 100, pattern: '\\S' }),
              scopes: Type.Array(ScopeSchema, { minItems: 1, maxItems: 20 }),
              expiresAt: Type.Optional(Type.String({ format: 'date-time' })),
            },
            { additionalProperties: false },
          ),
          response: { 201: Type.Object({ ...ApiKeySchema.properties, secret: Type.String() }, { additionalProperties: false }) },
        },
      },
      async (request, reply) => {
        const access = accessOf(request);
        const body = request.body as { name: string; scopes: string[]; expiresAt?: string };
        const input = { ...body, expiresAt: body.expiresAt === undefined ? undefined : new Date(body.expiresAt) };
        const key = await apiKeys.create(access.orgId, input, userPrincipalId(request), access.permissions, actorOf(request));
        return reply.code(201).send(key);
      },
    );

    app.get(
      '/orgs/:orgId/api-keys',
      {
        config: { permission: PERMISSIONS.apiKeysManage },
        schema: { tags: ['api-keys'], summary: 'List API keys (never their secrets)', security: bearer, params: OrgParams, querystring: ListQuery, response: { 200: Page(ApiKeySchema) } },
      },
      async (request) => {
        const q = request.query as { cursor?: string; limit?: number };
        return apiKeys.list(accessOf(request).orgId, { ...q, limit: q.limit ?? DEFAULT_PAGE_SIZE });
      },
    );

    const KeyParams = Type.Object({ orgId: Uuid(), keyId: Uuid() });
    app.get(
      '/orgs/:orgId/api-keys/:keyId',
      {
        config: { permission: PERMISSIONS.apiKeysManage },
        schema: { tags: ['api-keys'], summary: 'Get an API key (with its last-used time)', security: bearer, params: KeyParams, response: { 200: ApiKeySchema } },
      },
      async (request) => apiKeys.get(accessOf(request).orgId, (request.params as { keyId: string }).keyId),
    );

    app.delete(
      '/orgs/:orgId/api-keys/:keyId',
      {
        config: { permission: PERMISSIONS.apiKeysManage },
        schema: { tags: ['api-keys'], summary: 'Revoke an API key (effective on the next request)', security: bearer, params: KeyParams, response: { 204: Type.Null() } },
      },
      async (request, reply) => {
        await apiKeys.revoke(accessOf(request).orgId, (request.params as { keyId: string }).keyId, actorOf(request));
        return reply.code(204).send(null);
      },
    );
  };
}

/** The user acting (for an API key, its creator) — recorded as invited_by / created_by. */
function userPrincipalId(request: FastifyRequest): string {
  return principalOf(request).userId;
}
