import { Type } from '@sinclair/typebox';
import { actorOf } from '../../platform/http/actor.ts';
import { accessOf, AUTHENTICATED, principalOf } from '../../platform/http/auth.ts';
import { DEFAULT_PAGE_SIZE } from '../../platform/http/pagination.ts';
import { DateTime, Page, Uuid } from '../../platform/http/schemas.ts';
import type { App } from '../../platform/http/server.ts';
import { Email, Password, PersonName, requestMeta, UserSchema, userPrincipal, type Identity } from '../identity/index.ts';
import { PERMISSIONS, type Role } from './tenancy.roles.ts';
import { bearer, ListQuery, MemberSchema, MembershipSchema, OrganizationSchema, OrgName, OrgParams, RoleSchema } from './tenancy.schemas.ts';
import type { TenancyUseCases } from './use-cases/index.ts';

const MemberParams = Type.Object({ orgId: Uuid(), userId: Uuid() });

export function tenancyRoutes(deps: { tenancy: TenancyUseCases; identity: Pick<Identity, 'getUser'> }): (app: App) => Promise<void> {
  const { tenancy, identity } = deps;
  return async (app: App) => {
    app.post(
      '/auth/signup',
      {
        config: { public: true },
        schema: {
          tags: ['auth'],
          summary: 'Create an account and its first organization; returns a session token',
          body: Type.Object({ email: Email, password: Password, name: PersonName, organizationName: OrgName }, { additionalProperties: false }),
          response: {
            201: Type.Object(
              { user: UserSchema, organization: OrganizationSchema, token: Type.String(), expiresAt: DateTime() },
              { additionalProperties: false },
            ),
          },
        },
      },
      async (request, reply) => {
        const body = request.body as { email: string; password: string; name: string; organizationName: string };
        const r = await tenancy.signup(body, requestMeta(request));
        return reply.code(201).send({ user: r.user, organization: r.organization, token: r.session.token, expiresAt: r.session.expiresAt });
      },
    );

    app.get(
      '/me',
      {
        config: { permission: AUTHENTICATED },
        schema: {
          tags: ['me'],
          summary: 'The signed-in user and their memberships in every organization',
          security: bearer,
          response: { 200: Type.Object({ user: UserSchema, memberships: Type.Array(MembershipSchema) }, { additionalProperties: false }) },
        },
      },
      async (request) => {
        const p = userPrincipal(request);
        const [user, memberships] = await Promise.all([identity.getUser(p.userId), tenancy.membershipsOf(p.userId)]);
        return { user, memberships };
      },
    );

    app.post(
      '/orgs',
      {
        config: { permission: AUTHENTICATED },
        schema: {
          tags: ['orgs'],
          summary: 'Create an organization; the caller becomes its owner',
          security: bearer,
          body: Type.Object({ name: OrgName }, { additionalProperties: false }),
          response: { 201: OrganizationSchema },
        },
      },
      async (request, reply) => {
        const p = userPrincipal(request);
        const org = await tenancy.createOrg(p.userId, (request.body as { name: string }).name, actorOf(request));
        return reply.code(201).send(org);
      },
    );

    app.get(
      '/orgs/:orgId',
      {
        config: { permission: PERMISSIONS.orgRead },
        schema: { tags: ['orgs'], summary: 'Get an organization', security: bearer, params: OrgParams, response: { 200: OrganizationSchema } },
      },
      async (request) => tenancy.getOrg(accessOf(request).orgId),
    );

    app.patch(
      '/orgs/:orgId',
      {
        config: { permission: PERMISSIONS.orgManage },
        schema: {
          tags: ['orgs'],
          summary: 'Rename an organization',
          security: bearer,
          params: OrgParams,
          body: Type.Object({ name: OrgName }, { additionalProperties: false }),
          response: { 200: OrganizationSchema },
        },
      },
      async (request) => tenancy.renameOrg(accessOf(request).orgId, (request.body as { name: string }).name, actorOf(request)),
    );

    app.get(
      '/orgs/:orgId/members',
      {
        config: { permission: PERMISSIONS.membersRead },
        schema: {
          tags: ['members'],
          summary: 'List members',
          security: bearer,
          params: OrgParams,
          querystring: Type.Object({ ...ListQuery.properties, role: Type.Optional(RoleSchema) }, { additionalProperties: false }),
          response: { 200: Page(MemberSchema) },
        },
      },
      async (request) => {
        const q = request.query as { cursor?: string; limit?: number; role?: string };
        return tenancy.listMembers(accessOf(request).orgId, { ...q, limit: q.limit ?? DEFAULT_PAGE_SIZE });
      },
    );

    app.get(
      '/orgs/:orgId/members/:userId',
      {
        config: { permission: PERMISSIONS.membersRead },
        schema: { tags: ['members'], summary: 'Get a member', security: bearer, params: MemberParams, response: { 200: MemberSchema } },
      },
      async (request) => tenancy.getMember(accessOf(request).orgId, (request.params as { userId: string }).userId),
    );

    app.patch(
      '/orgs/:orgId/members/:userId',
      {
        config: { permission: PERMISSIONS.membersManage },
        schema: {
          tags: ['members'],
          summary: "Change a member's role (the last owner cannot be demoted)",
          security: bearer,
          params: MemberParams,
          body: Type.Object({ role: RoleSchema }, { additionalProperties: false }),
          response: { 200: MemberSchema },
        },
      },
      async (request) => {
        const access = accessOf(request);
        const { userId } = request.params as { userId: string };
        return tenancy.changeRole(access.orgId, userId, (request.body as { role: Role }).role, access.permissions, actorOf(request));
      },
    );

    app.delete(
      '/orgs/:orgId/members/:userId',
      {
        // Any member may leave; removing someone else is checked against members:manage in the service.
        config: { permission: PERMISSIONS.orgRead },
        schema: {
          tags: ['members'],
          summary: 'Remove a member, or leave (your own user id); the last owner cannot leave',
          security: bearer,
          params: MemberParams,
          response: { 204: Type.Null() },
        },
      },
      async (request, reply) => {
        const access = accessOf(request);
        const { userId } = request.params as { userId: string };
        await tenancy.removeMember(access.orgId, userId, principalOf(request).userId, access.permissions, actorOf(request));
        return reply.code(204).send(null);
      },
    );
  };
}
