import { STATUS_CODES } from 'node:http';
import { Type, type TSchema } from '@sinclair/typebox';
import type { FastifyError, FastifyReply, FastifyRequest } from 'fastify';
import { isDatabaseUnavailable } from '../../platform/db/unavailable.ts';
import { AppError } from '../../platform/http/errors.ts';
import { jsonDepthExceeds, MAX_JSON_DEPTH } from '../../platform/http/input.ts';
import type { App } from '../../platform/http/server.ts';
import { scimError, scimUnauthorized, type ScimType } from './directory.errors.ts';
import { groupAttrsFrom, listResponse, MAX_PAGE, parseEqFilter, patchOps, renderGroup, renderUser, SCIM, SCIM_CONTENT_TYPE, userAttrsFrom } from './directory.scim.ts';
import type { DirectoryService } from './directory.service.ts';
import type { ScimCaller } from './use-cases/deps.ts';

// ── wire schemas (RFC 7643 §4, RFC 7644 §3.4.2, §3.12) ──
const Str = Type.String();
const Opt = <T extends TSchema>(t: T) => Type.Optional(t);
const Meta = Type.Object({ resourceType: Str, created: Str, lastModified: Str, location: Str, version: Str });
// No `$ref` member: a property of that name in a route schema breaks the OpenAPI $ref resolver (values stay resolvable from ids).
const Ref = Type.Object({ value: Str, display: Opt(Str) });
const UserOut = Type.Object({
  schemas: Type.Array(Str),
  id: Str,
  externalId: Opt(Str),
  userName: Str,
  name: Type.Object({ givenName: Opt(Str), familyName: Opt(Str), formatted: Opt(Str) }),
  displayName: Opt(Str),
  emails: Type.Array(Type.Object({ value: Str, type: Str, primary: Type.Boolean() })),
  active: Type.Boolean(),
  groups: Type.Array(Ref),
  meta: Meta,
});
const GroupOut = Type.Object({ schemas: Type.Array(Str), id: Str, externalId: Opt(Str), displayName: Str, members: Type.Array(Ref), meta: Meta });
const ListOut = <T extends TSchema>(t: T) =>
  Type.Object({ schemas: Type.Array(Str), totalResults: Type.Integer(), startIndex: Type.Integer(), itemsPerPage: Type.Integer(), Resources: Type.Array(t) });
const ErrorOut = Type.Object({ schemas: Type.Array(Str), status: Str, scimType: Opt(Str), detail: Str });
// 4xx/5xx too: otherwise the kernel's problem+json schema would serialize a 413 or 415 here.
const errors = { 400: ErrorOut, 401: ErrorOut, 404: ErrorOut, 409: ErrorOut, '4XX': ErrorOut, '5XX': ErrorOut };

const Params = Type.Object({ orgId: Type.String({ maxLength: 64 }) });
const IdParams = Type.Object({ orgId: Type.String({ maxLength: 64 }), id: Type.String({ maxLength: 64 }) });
/** SCIM bodies carry extension schemas (enterprise User) the IdP sends unasked: extra attributes are ignored, not refused. */
const Body = Type.Object({}, { additionalProperties: true, maxProperties: 50 });
const ListQuery = Type.Object(
  {
    filter: Opt(Type.String({ maxLength: 500 })),
    startIndex: Opt(Type.Integer({ description: '1-based; values below 1 read as 1', maximum: 1_000_000_000 })),
    count: Opt(Type.Integer({ description: `page size; negative reads as 0, more than ${MAX_PAGE} as ${MAX_PAGE}`, maximum: 1_000_000_000 })),
  },
  { additionalProperties: true },
);

type ListQ = { filter?: string; startIndex?: number; count?: number };
const paging = (q: ListQ) => ({ startIndex: Math.max(1, q.startIndex ?? 1), count: Math.min(MAX_PAGE, Math.max(0, q.count ?? 100)) });

/** RFC 7644 §3.12: `{"schemas":[…Error], "status":"404", "scimType"?, "detail"}` as application/scim+json. */
function sendScimError(reply: FastifyReply, status: number, detail: string, scimType?: ScimType) {
  return reply.code(status).type(SCIM_CONTENT_TYPE).send({ schemas: [SCIM.error], status: String(status), ...(scimType ? { scimType } : {}), detail });
}

function scimErrorHandler(error: FastifyError | AppError | Error, request: FastifyRequest, reply: FastifyReply) {
  if (error instanceof AppError) {
    for (const [k, v] of Object.entries(error.headers)) reply.header(k, v);
    if (error.status >= 500) request.log.error({ err: error }, 'scim request failed');
    const scimType = (error.context.scimType as ScimType | undefined) ?? (error.status === 409 ? 'uniqueness' : undefined);
    return sendScimError(reply, error.status, error.status >= 500 ? 'The server could not complete the request' : error.detail, scimType);
  }
  if (isDatabaseUnavailable(error)) return sendScimError(reply.header('retry-after', '2'), 503, 'The database is temporarily unavailable; retry shortly');
  const fe = error as FastifyError;
  if (fe.validation) return sendScimError(reply, 400, `${fe.validationContext ?? 'body'} ${fe.validation[0]?.instancePath || '/'} ${fe.validation[0]?.message ?? 'is invalid'}`, fe.validationContext === 'body' ? 'invalidSyntax' : 'invalidValue');
  const status = typeof fe.statusCode === 'number' ? fe.statusCode : 500;
  if (status >= 400 && status < 500) return sendScimError(reply, status, error instanceof SyntaxError ? 'The body is not valid JSON' : (STATUS_CODES[status] ?? 'Bad request'), status === 400 ? 'invalidSyntax' : undefined);
  request.log.error({ err: error }, 'scim request failed');
  return sendScimError(reply, 500, 'The server could not complete the request');
}

/**
 * SCIM 2.0 (RFC 7644) for the org's identity provider: /scim/v2/{orgId}/Users and /Groups. Public to the
 * kernel's authorization (no Plinth principal): each request carries the org's SCIM bearer token, checked
 * here in that org's tenant context, so org A's token on org B's path finds no token (401) and reads nothing.
 */
export function scimRoutes(service: DirectoryService): (app: App) => Promise<void> {
  return async (app: App) => {
    const callers = new WeakMap<FastifyRequest, ScimCaller>();
    const parse = app.getDefaultJsonParser('error', 'error');
    app.addContentTypeParser('application/scim+json', { parseAs: 'string' }, (request, body, done) => {
      const text = typeof body === 'string' ? body : body.toString('utf8');
      if (text.trim().length === 0) return done(null, undefined);
      if (jsonDepthExceeds(text, MAX_JSON_DEPTH)) return done(scimError(400, 'invalidSyntax', 'The body is nested too deeply'));
      parse(request, text, done);
    });
    app.setErrorHandler(scimErrorHandler);
    app.addHook('onSend', async (_request, reply, payload) => {
      if (String(reply.getHeader('content-type') ?? '').startsWith('application/json')) reply.type(SCIM_CONTENT_TYPE);
      return payload;
    });
    app.addHook('onRequest', async (request) => {
      const { orgId } = request.params as { orgId?: string };
      const header = request.headers.authorization ?? '';
      const token = /^Bearer\s+(\S+)$/i.exec(header)?.[1];
      const tokenId = orgId && token ? await service.authenticate(orgId, token) : null;
      if (!tokenId) throw scimUnauthorized();
      callers.set(request, { orgId: orgId!, ctx: { actor: { type: 'system', id: `scim_token:${tokenId}`, userId: null }, requestId: request.id, ip: request.ip } });
    });
    const callerOf = (request: FastifyRequest) => callers.get(request)!;
    const baseOf = (request: FastifyRequest) => `${request.protocol}://${request.host}/scim/v2/${callerOf(request).orgId}`;
    const config = { public: true };
    const tags = ['scim'];
    const security = [{ bearer: [] }];
    const id = (request: FastifyRequest) => (request.params as { id: string }).id;

    app.get('/:orgId/ServiceProviderConfig', { config, schema: { tags, security, summary: 'What this SCIM service supports (RFC 7643 §5)', params: Params, response: { 200: Type.Object({}, { additionalProperties: true }), ...errors } } }, async () => ({
      schemas: ['urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig'],
      patch: { supported: true },
      bulk: { supported: false, maxOperations: 0, maxPayloadSize: 0 },
      filter: { supported: true, maxResults: MAX_PAGE },
      changePassword: { supported: false },
      sort: { supported: false },
      etag: { supported: false },
      authenticationSchemes: [{ type: 'oauthbearertoken', name: 'OAuth Bearer Token', description: 'A per-organization SCIM token (POST /v1/orgs/{orgId}/scim-tokens)', primary: true }],
    }));

    // ── Users ──
    app.post('/:orgId/Users', { config, schema: { tags, security, summary: 'Provision a user (creates or links the account, adds the membership)', params: Params, body: Body, response: { 201: UserOut, ...errors } } }, async (request, reply) => {
      const user = await service.users.create(callerOf(request), userAttrsFrom(request.body as Record<string, unknown>));
      const out = renderUser(user, baseOf(request));
      reply.code(201).header('location', out.meta.location).header('etag', out.meta.version);
      return out;
    });
    app.get('/:orgId/Users', { config, schema: { tags, security, summary: 'List users (filter: userName eq "…" or externalId eq "…")', params: Params, querystring: ListQuery, response: { 200: ListOut(UserOut), ...errors } } }, async (request) => {
      const q = request.query as ListQ;
      const page = paging(q);
      const { total, users } = await service.users.list(callerOf(request).orgId, { ...parseEqFilter(q.filter, ['userName', 'externalId'] as const), ...page });
      return listResponse(users.map((u) => renderUser(u, baseOf(request))), total, page.startIndex);
    });
    app.get('/:orgId/Users/:id', { config, schema: { tags, security, summary: 'Get a user', params: IdParams, response: { 200: UserOut, ...errors } } }, async (request) =>
      renderUser(await service.users.get(callerOf(request).orgId, id(request)), baseOf(request)),
    );
    app.put('/:orgId/Users/:id', { config, schema: { tags, security, summary: 'Replace a user (active:false deprovisions)', params: IdParams, body: Body, response: { 200: UserOut, ...errors } } }, async (request) =>
      renderUser(await service.users.replace(callerOf(request), id(request), userAttrsFrom(request.body as Record<string, unknown>)), baseOf(request)),
    );
    app.patch('/:orgId/Users/:id', { config, schema: { tags, security, summary: 'Patch a user (RFC 7644 PatchOp; active:false deprovisions)', params: IdParams, body: Body, response: { 200: UserOut, ...errors } } }, async (request) =>
      renderUser(await service.users.patch(callerOf(request), id(request), patchOps(request.body as Record<string, unknown>)), baseOf(request)),
    );
    app.delete('/:orgId/Users/:id', { config, schema: { tags, security, summary: "Delete a user: membership, API keys and sessions end; the account stays", params: IdParams, response: { 204: Type.Null(), ...errors } } }, async (request, reply) => {
      await service.users.remove(callerOf(request), id(request));
      return reply.code(204).send(null);
    });

    // ── Groups ──
    app.post('/:orgId/Groups', { config, schema: { tags, security, summary: 'Create a group (its members get the role it maps to)', params: Params, body: Body, response: { 201: GroupOut, ...errors } } }, async (request, reply) => {
      const out = renderGroup(await service.groups.create(callerOf(request), groupAttrsFrom(request.body as Record<string, unknown>)), baseOf(request));
      reply.code(201).header('location', out.meta.location).header('etag', out.meta.version);
      return out;
    });
    app.get('/:orgId/Groups', { config, schema: { tags, security, summary: 'List groups (filter: displayName eq "…" or externalId eq "…")', params: Params, querystring: ListQuery, response: { 200: ListOut(GroupOut), ...errors } } }, async (request) => {
      const q = request.query as ListQ;
      const page = paging(q);
      const { total, groups } = await service.groups.list(callerOf(request).orgId, { ...parseEqFilter(q.filter, ['displayName', 'externalId'] as const), ...page });
      return listResponse(groups.map((g) => renderGroup(g, baseOf(request))), total, page.startIndex);
    });
    app.get('/:orgId/Groups/:id', { config, schema: { tags, security, summary: 'Get a group', params: IdParams, response: { 200: GroupOut, ...errors } } }, async (request) =>
      renderGroup(await service.groups.get(callerOf(request).orgId, id(request)), baseOf(request)),
    );
    app.put('/:orgId/Groups/:id', { config, schema: { tags, security, summary: 'Replace a group', params: IdParams, body: Body, response: { 200: GroupOut, ...errors } } }, async (request) =>
      renderGroup(await service.groups.replace(callerOf(request), id(request), groupAttrsFrom(request.body as Record<string, unknown>)), baseOf(request)),
    );
    app.patch('/:orgId/Groups/:id', { config, schema: { tags, security, summary: 'Patch a group (members add/remove/replace, displayName)', params: IdParams, body: Body, response: { 200: GroupOut, ...errors } } }, async (request) =>
      renderGroup(await service.groups.patch(callerOf(request), id(request), patchOps(request.body as Record<string, unknown>)), baseOf(request)),
    );
    app.delete('/:orgId/Groups/:id', { config, schema: { tags, security, summary: "Delete a group; its members' roles are recomputed", params: IdParams, response: { 204: Type.Null(), ...errors } } }, async (request, reply) => {
      await service.groups.remove(callerOf(request), id(request));
      return reply.code(204).send(null);
    });
  };
}
