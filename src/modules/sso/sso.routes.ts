import { Type } from '@sinclair/typebox';
import type { FastifyRequest } from 'fastify';
import { tenantActorOf } from '../../platform/http/actor.ts';
import { principalOf } from '../../platform/http/auth.ts';
import { Page, Uuid } from '../../platform/http/schemas.ts';
import type { App } from '../../platform/http/server.ts';
import { requestMeta } from '../identity/index.ts';
import { PERMISSIONS } from '../tenancy/index.ts';
import {
  ConnectionCreate,
  ConnectionPatchSchema,
  ConnectionSchema,
  DomainName,
  DomainSchema,
  SecurityPolicyInput,
  SecurityPolicySchema,
  SsoLoginSchema,
} from './sso.schemas.ts';
import type { PolicyInput } from './use-cases/manage-policy.ts';
import type { SsoService } from './sso.service.ts';
import type { ConnectionInput, ConnectionPatch } from './use-cases/manage-connections.ts';

const bearer = [{ bearer: [] }];
const SSO_MANAGE = PERMISSIONS.ssoManage;
const OrgParams = Type.Object({ orgId: Uuid() });
const ConnectionParams = Type.Object({ orgId: Uuid(), connectionId: Uuid() });
const DomainParams = Type.Object({ orgId: Uuid(), domainId: Uuid() });
/** Form posts from IdPs carry one base64 SAMLResponse (signed XML: tens of KB at most). */
const FORM_LIMIT = 256 * 1024;

type Params = { orgId: string; connectionId: string; domainId: string };
const params = (r: FastifyRequest) => r.params as Params;

const toLogin = (l: Awaited<ReturnType<SsoService['oidc']['callback']>>) => ({
  token: l.token,
  expiresAt: l.expiresAt,
  user: l.user,
  orgId: l.orgId,
  role: l.role,
  provisioned: l.provisioned,
});

export function ssoRoutes(sso: SsoService): (app: App) => Promise<void> {
  return async (app: App) => {
    // IdPs POST the SAML response as a form; parsed only inside this plugin.
    app.addContentTypeParser('application/x-www-form-urlencoded', { parseAs: 'string', bodyLimit: FORM_LIMIT }, (_req, body, done) => {
      done(null, Object.fromEntries(new URLSearchParams(typeof body === 'string' ? body : body.toString('utf8'))));
    });

    // A login answer carries a new session token: it must never be replayed from the Idempotency-Key
    // store (a captured SAMLResponse + key would otherwise bypass the one-time assertion check).
    app.addHook('onRequest', async (request) => {
      if (request.routeOptions.config?.public) delete request.headers['idempotency-key'];
    });

    // ── connections (org admins) ──
    app.post(
      '/orgs/:orgId/sso/connections',
      {
        config: { permission: SSO_MANAGE },
        schema: { tags: ['sso'], summary: 'Add an SSO connection (OIDC or SAML) to the org', security: bearer, params: OrgParams, body: ConnectionCreate, response: { 201: ConnectionSchema } },
      },
      async (request, reply) => reply.code(201).send(await sso.connections.create(params(request).orgId, request.body as ConnectionInput, tenantActorOf(request))),
    );

    app.get(
      '/orgs/:orgId/sso/connections',
      { config: { permission: SSO_MANAGE }, schema: { tags: ['sso'], summary: "List the org's SSO connections", security: bearer, params: OrgParams, response: { 200: Page(ConnectionSchema) } } },
      async (request) => ({ data: await sso.connections.list(params(request).orgId), nextCursor: null }),
    );

    app.get(
      '/orgs/:orgId/sso/connections/:connectionId',
      { config: { permission: SSO_MANAGE }, schema: { tags: ['sso'], summary: 'Get an SSO connection', security: bearer, params: ConnectionParams, response: { 200: ConnectionSchema } } },
      async (request) => sso.connections.get(params(request).orgId, params(request).connectionId),
    );

    app.patch(
      '/orgs/:orgId/sso/connections/:connectionId',
      {
        config: { permission: SSO_MANAGE },
        schema: { tags: ['sso'], summary: 'Change a connection (name, enabled, default role, group mapping)', security: bearer, params: ConnectionParams, body: ConnectionPatchSchema, response: { 200: ConnectionSchema } },
      },
      async (request) => sso.connections.update(params(request).orgId, params(request).connectionId, request.body as ConnectionPatch, tenantActorOf(request)),
    );

    app.delete(
      '/orgs/:orgId/sso/connections/:connectionId',
      { config: { permission: SSO_MANAGE }, schema: { tags: ['sso'], summary: 'Delete an SSO connection', security: bearer, params: ConnectionParams, response: { 204: Type.Null() } } },
      async (request, reply) => {
        await sso.connections.remove(params(request).orgId, params(request).connectionId, tenantActorOf(request));
        return reply.code(204).send(null);
      },
    );

    // ── verified domains and enforcement ──
    app.post(
      '/orgs/:orgId/domains',
      {
        config: { permission: SSO_MANAGE },
        schema: {
          tags: ['sso'],
          summary: 'Claim a domain: returns the DNS TXT record that proves control of it',
          security: bearer,
          params: OrgParams,
          body: Type.Object({ domain: DomainName }, { additionalProperties: false }),
          response: { 201: DomainSchema },
        },
      },
      async (request, reply) => reply.code(201).send(await sso.domains.add(params(request).orgId, (request.body as { domain: string }).domain, tenantActorOf(request))),
    );

    app.get(
      '/orgs/:orgId/domains',
      { config: { permission: SSO_MANAGE }, schema: { tags: ['sso'], summary: "List the org's domains", security: bearer, params: OrgParams, response: { 200: Page(DomainSchema) } } },
      async (request) => ({ data: await sso.domains.list(params(request).orgId), nextCursor: null }),
    );

    app.post(
      '/orgs/:orgId/domains/:domainId/verify',
      { config: { permission: SSO_MANAGE }, schema: { tags: ['sso'], summary: 'Check the TXT record and mark the domain verified', security: bearer, params: DomainParams, response: { 200: DomainSchema } } },
      async (request) => sso.domains.verify(params(request).orgId, params(request).domainId, tenantActorOf(request)),
    );

    app.post(
      '/orgs/:orgId/domains/:domainId/enforcement',
      {
        config: { permission: SSO_MANAGE },
        schema: {
          tags: ['sso'],
          summary: 'Require SSO for every account of a verified domain (password login and password sessions refused)',
          security: bearer,
          params: DomainParams,
          body: Type.Object({ enforced: Type.Boolean() }, { additionalProperties: false }),
          response: { 200: DomainSchema },
        },
      },
      async (request) => sso.domains.setEnforced(params(request).orgId, params(request).domainId, (request.body as { enforced: boolean }).enforced, tenantActorOf(request)),
    );

    app.delete(
      '/orgs/:orgId/domains/:domainId',
      { config: { permission: SSO_MANAGE }, schema: { tags: ['sso'], summary: 'Remove a domain (and its enforcement)', security: bearer, params: DomainParams, response: { 204: Type.Null() } } },
      async (request, reply) => {
        await sso.domains.remove(params(request).orgId, params(request).domainId, tenantActorOf(request));
        return reply.code(204).send(null);
      },
    );

    // ── security policy ──
    app.get(
      '/orgs/:orgId/security-policy',
      { config: { permission: SSO_MANAGE }, schema: { tags: ['sso'], summary: "The org's security policy", security: bearer, params: OrgParams, response: { 200: SecurityPolicySchema } } },
      async (request) => sso.policy.get(params(request).orgId),
    );

    app.put(
      '/orgs/:orgId/security-policy',
      {
        config: { permission: SSO_MANAGE },
        schema: {
          tags: ['sso'],
          summary: 'Set the security policy: MFA required, session lifetime, idle timeout, IP allow-list (applies on the next request)',
          security: bearer,
          params: OrgParams,
          body: SecurityPolicyInput,
          response: { 200: SecurityPolicySchema },
        },
      },
      async (request) => {
        const p = principalOf(request);
        return sso.policy.set(params(request).orgId, request.body as PolicyInput, { userId: p.kind === 'user' ? p.userId : null, ip: request.ip }, tenantActorOf(request));
      },
    );

    // ── the login flows (public: the browser arrives without a credential) ──
    app.get(
      '/sso/:orgId/:connectionId/start',
      {
        config: { public: true },
        schema: {
          tags: ['sso'],
          summary: "Start an SP-initiated login: redirects to the connection's IdP (or returns the URL with ?mode=json)",
          params: ConnectionParams,
          querystring: Type.Object({ mode: Type.Optional(Type.Union([Type.Literal('redirect'), Type.Literal('json')])) }, { additionalProperties: false }),
          response: { 200: Type.Object({ redirectUrl: Type.String() }, { additionalProperties: false }), 302: Type.Null() },
        },
      },
      async (request, reply) => {
        const { orgId, connectionId } = params(request);
        const conn = await sso.connections.get(orgId, connectionId).catch(() => null);
        const flow = conn?.protocol === 'saml' ? sso.saml : sso.oidc;
        const { redirectUrl } = await flow.start(orgId, connectionId);
        reply.header('cache-control', 'no-store');
        if ((request.query as { mode?: string }).mode === 'json') return { redirectUrl };
        return reply.redirect(redirectUrl, 302);
      },
    );

    app.get(
      '/sso/oidc/callback',
      {
        config: { public: true },
        schema: {
          tags: ['sso'],
          summary: 'OIDC redirect URI: exchanges the code (PKCE) and returns a session',
          querystring: Type.Object(
            {
              code: Type.Optional(Type.String({ maxLength: 2048 })),
              state: Type.String({ minLength: 1, maxLength: 200 }),
              iss: Type.Optional(Type.String({ maxLength: 2048 })),
              session_state: Type.Optional(Type.String({ maxLength: 512 })),
              error: Type.Optional(Type.String({ maxLength: 200 })),
              error_description: Type.Optional(Type.String({ maxLength: 1000 })),
            },
            { additionalProperties: false },
          ),
          response: { 200: SsoLoginSchema },
        },
      },
      async (request, reply) => {
        const login = await sso.oidc.callback(request.query as Record<string, string>, requestMeta(request));
        return reply.header('cache-control', 'no-store').send(toLogin(login));
      },
    );

    app.get(
      '/sso/saml/:orgId/:connectionId/metadata',
      {
        config: { public: true },
        schema: { tags: ['sso'], summary: 'SAML SP metadata of the connection (give it to the IdP)', params: ConnectionParams, response: { 200: Type.String() } },
      },
      async (request, reply) => reply.type('application/samlmetadata+xml').send(await sso.saml.metadata(params(request).orgId, params(request).connectionId)),
    );

    app.post(
      '/sso/saml/:orgId/:connectionId/acs',
      {
        config: { public: true },
        schema: {
          tags: ['sso'],
          summary: 'SAML assertion consumer service (HTTP-POST binding): SP- or IdP-initiated; returns a session',
          params: ConnectionParams,
          body: Type.Object(
            { SAMLResponse: Type.String({ minLength: 1, maxLength: FORM_LIMIT }), RelayState: Type.Optional(Type.String({ maxLength: 200 })) },
            { additionalProperties: false },
          ),
          response: { 200: SsoLoginSchema },
        },
      },
      async (request, reply) => {
        const { orgId, connectionId } = params(request);
        const login = await sso.saml.acs(orgId, connectionId, request.body as { SAMLResponse: string; RelayState?: string }, requestMeta(request));
        return reply.header('cache-control', 'no-store').send(toLogin(login));
      },
    );
  };
}
