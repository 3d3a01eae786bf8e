import { Type } from '@sinclair/typebox';
import { tenantActorOf as actor } from '../../platform/http/actor.ts';
import { AppError } from '../../platform/http/errors.ts';
import { DateTime, Uuid } from '../../platform/http/schemas.ts';
import type { App } from '../../platform/http/server.ts';
import { PERMISSIONS } from '../tenancy/index.ts';
import type { DirectoryService } from './directory.service.ts';
import type { OrgDeletionUseCases } from './use-cases/org-deletion.ts';

/** owner and admin (tenancy's role map). */
export const DIRECTORY_MANAGE = PERMISSIONS.directoryManage;

const NullableDate = Type.Union([DateTime(), Type.Null()]);
const TokenSchema = Type.Object(
  { id: Uuid(), name: Type.String(), createdBy: Type.Union([Uuid(), Type.Null()]), createdAt: DateTime(), lastUsedAt: NullableDate, revokedAt: NullableDate },
  { additionalProperties: false },
);
const CreatedTokenSchema = Type.Object(
  { ...TokenSchema.properties, token: Type.String({ description: 'The bearer token for the IdP (scim_…, 256 bits). Shown only in this response.' }) },
  { additionalProperties: false },
);
const MappableRole = Type.Unsafe<string>({ type: 'string', enum: ['admin', 'member', 'viewer', 'billing'], description: 'owner is never granted by a directory' });
const Mapping = Type.Object({ group: Type.String({ minLength: 1, maxLength: 256, description: 'SCIM group displayName (case-insensitive)' }), role: MappableRole }, { additionalProperties: false });
const MappingsSchema = Type.Object({ mappings: Type.Array(Mapping, { maxItems: 100 }) }, { additionalProperties: false });

const OrgParams = Type.Object({ orgId: Uuid() });

/** Org admins manage the org's SCIM tokens and its group → role mapping here; the IdP uses /scim/v2. */
const DeletionSchema = Type.Object(
  { orgId: Uuid(), requestedBy: Type.Union([Uuid(), Type.Null()]), requestedAt: DateTime(), purgeAfter: DateTime() },
  { additionalProperties: false },
);

export function directoryRoutes(service: DirectoryService, deletion: OrgDeletionUseCases): (app: App) => Promise<void> {
  return async (app: App) => {
    const tags = ['directory'];
    const security = [{ bearer: [] }];
    const config = { permission: DIRECTORY_MANAGE };

    app.post(
      '/orgs/:orgId/scim-tokens',
      {
        config,
        schema: {
          tags,
          security,
          summary: "Create a SCIM bearer token for the org's identity provider (returned once, here)",
          params: OrgParams,
          body: Type.Object({ name: Type.String({ minLength: 1, maxLength: 100 }) }, { additionalProperties: false }),
          response: { 201: CreatedTokenSchema },
        },
      },
      async (request, reply) => {
        const { orgId } = request.params as { orgId: string };
        const created = await service.createToken(orgId, (request.body as { name: string }).name, actor(request));
        reply.code(201).header('cache-control', 'no-store');
        return created;
      },
    );

    app.get(
      '/orgs/:orgId/scim-tokens',
      { config, schema: { tags, security, summary: "The org's SCIM tokens (newest first, at most 100; never the secret)", params: OrgParams, response: { 200: Type.Object({ data: Type.Array(TokenSchema) }) } } },
      async (request) => ({ data: await service.listTokens((request.params as { orgId: string }).orgId) }),
    );

    app.delete(
      '/orgs/:orgId/scim-tokens/:tokenId',
      { config, schema: { tags, security, summary: 'Revoke a SCIM token (at once)', params: Type.Object({ orgId: Uuid(), tokenId: Uuid() }), response: { 204: Type.Null() } } },
      async (request, reply) => {
        const { orgId, tokenId } = request.params as { orgId: string; tokenId: string };
        await service.revokeToken(orgId, tokenId, actor(request));
        return reply.code(204).send(null);
      },
    );

    // ── org deletion (data rights): owner only, with a grace period ──
    const ownerOnly = { permission: PERMISSIONS.orgDelete };
    app.delete(
      '/orgs/:orgId',
      { config: ownerOnly, schema: { tags: ['organizations'], security, summary: "Schedule the org's deletion: every row of it is hard-deleted after 30 days unless cancelled", params: OrgParams, response: { 202: DeletionSchema } } },
      async (request, reply) => {
        reply.code(202);
        return deletion.schedule((request.params as { orgId: string }).orgId, actor(request));
      },
    );
    app.get(
      '/orgs/:orgId/deletion',
      { config: { permission: PERMISSIONS.orgRead }, schema: { tags: ['organizations'], security, summary: "The org's scheduled deletion (404 when none)", params: OrgParams, response: { 200: DeletionSchema } } },
      async (request) => deletion.get((request.params as { orgId: string }).orgId),
    );
    app.delete(
      '/orgs/:orgId/deletion',
      { config: ownerOnly, schema: { tags: ['organizations'], security, summary: 'Cancel the scheduled deletion', params: OrgParams, response: { 204: Type.Null() } } },
      async (request, reply) => {
        await deletion.cancel((request.params as { orgId: string }).orgId, actor(request));
        return reply.code(204).send(null);
      },
    );

    app.get(
      '/orgs/:orgId/scim-group-roles',
      { config, schema: { tags, security, summary: 'The SCIM group → role mapping (unmapped users get member)', params: OrgParams, response: { 200: MappingsSchema } } },
      async (request) => ({ mappings: await service.groupRoles((request.params as { orgId: string }).orgId) }),
    );

    app.put(
      '/orgs/:orgId/scim-group-roles',
      {
        config,
        schema: {
          tags,
          security,
          summary: "Replace the SCIM group → role mapping; every directory user's role is recomputed (the mapped role with most permissions wins)",
          params: OrgParams,
          body: MappingsSchema,
          response: { 200: MappingsSchema },
        },
      },
      async (request) => {
        const { orgId } = request.params as { orgId: string };
        const { mappings } = request.body as { mappings: Array<{ group: string; role: string }> };
        if (new Set(mappings.map((m) => m.group.toLowerCase())).size !== mappings.length) {
          throw new AppError('DIRECTORY.DUPLICATE_GROUP', 400, 'Each group may be mapped once (names compare case-insensitively)');
        }
        return { mappings: await service.setGroupRoles(orgId, mappings, actor(request)) };
      },
    );
  };
}
