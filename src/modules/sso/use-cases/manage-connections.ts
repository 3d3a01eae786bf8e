import type { TenantActorContext } from '../../../platform/http/actor.ts';
import { newId } from '../../../platform/ids.ts';
import { badConnectionConfig, connectionNotFound } from '../sso.errors.ts';
import type { ConnectionRow, OidcConfig, SamlConfig } from '../sso.repo.ts';
import type { SsoUseCaseDeps } from './deps.ts';

export interface ConnectionInput {
  name: string;
  defaultRole: string;
  groupsAttribute?: string | null;
  roleMapping?: Record<string, string>;
  oidc?: OidcConfig & { clientSecret?: string };
  saml?: SamlConfig;
}

export interface ConnectionPatch {
  name?: string;
  enabled?: boolean;
  defaultRole?: string;
  groupsAttribute?: string | null;
  roleMapping?: Record<string, string>;
}

/** A connection as the API shows it: the client secret never leaves, only whether one is set. */
export interface Connection {
  id: string;
  protocol: 'oidc' | 'saml';
  name: string;
  enabled: boolean;
  defaultRole: string;
  groupsAttribute: string | null;
  roleMapping: Record<string, string>;
  oidc?: OidcConfig & { hasClientSecret: boolean; redirectUri: string };
  saml?: SamlConfig & { spEntityId: string; acsUrl: string };
  createdAt: Date;
  updatedAt: Date;
}

/** Where an IdP sends users back, per protocol (also the SP entity id for SAML). */
export function endpoints(publicUrl: string, orgId: string, connectionId: string) {
  const base = publicUrl.replace(/\/+$/, '');
  const saml = `${base}/v1/sso/saml/${orgId}/${connectionId}`;
  return { oidcRedirectUri: `${base}/v1/sso/oidc/callback`, spEntityId: saml, acsUrl: `${saml}/acs` };
}

export function toConnection(publicUrl: string, r: ConnectionRow): Connection {
  const urls = endpoints(publicUrl, r.orgId, r.id);
  const base = { id: r.id, protocol: r.protocol, name: r.name, enabled: r.enabled, defaultRole: r.defaultRole, groupsAttribute: r.groupsAttribute, roleMapping: r.roleMapping, createdAt: r.createdAt, updatedAt: r.updatedAt };
  if (r.protocol === 'oidc') {
    const c = r.config as OidcConfig;
    return { ...base, oidc: { issuer: c.issuer, clientId: c.clientId, hasClientSecret: Boolean(r.secretCiphertext), redirectUri: urls.oidcRedirectUri } };
  }
  const c = r.config as SamlConfig;
  return { ...base, saml: { idpEntityId: c.idpEntityId, idpSsoUrl: c.idpSsoUrl, idpCert: c.idpCert, allowIdpInitiated: c.allowIdpInitiated, spEntityId: urls.spEntityId, acsUrl: urls.acsUrl } };
}

const PEM = /^-----BEGIN CERTIFICATE-----[\s\S]+-----END CERTIFICATE-----\s*$/;

export function manageConnections(deps: SsoUseCaseDeps) {
  const { repo, audit, secrets, settings } = deps;
  const show = (r: ConnectionRow) => toConnection(settings.publicUrl, r);

  return {
    async create(orgId: string, input: ConnectionInput, ctx: TenantActorContext): Promise<Connection> {
      if (Boolean(input.oidc) === Boolean(input.saml)) throw badConnectionConfig('Give exactly one of oidc or saml');
      if (input.saml && !PEM.test(input.saml.idpCert.trim())) throw badConnectionConfig('saml.idpCert must be a PEM certificate');
      const id = newId();
      const { clientSecret, ...oidc } = input.oidc ?? { clientSecret: undefined };
      const row = await repo.withTenant(orgId, async (trx) => {
        const row = await repo.insertConnection(trx, {
          id,
          orgId,
          protocol: input.oidc ? 'oidc' : 'saml',
          name: input.name,
          config: input.oidc ? (oidc as OidcConfig) : input.saml!,
          secretCiphertext: clientSecret ? secrets.seal(clientSecret) : null,
          defaultRole: input.defaultRole,
          groupsAttribute: input.groupsAttribute ?? null,
          roleMapping: input.roleMapping ?? {},
          createdBy: ctx.actor.userId ?? ctx.actor.id,
        });
        await audit.record(trx, {
          orgId,
          action: 'sso.connection_created',
          target: { type: 'sso_connection', id },
          changes: { protocol: { to: row.protocol }, name: { to: row.name }, defaultRole: { to: row.defaultRole }, roleMapping: { to: row.roleMapping } },
          context: ctx,
        });
        return row;
      });
      return show(row);
    },

    async list(orgId: string): Promise<Connection[]> {
      return (await repo.withTenantRead(orgId, (trx) => repo.listConnections(trx))).map(show);
    },

    async get(orgId: string, id: string): Promise<Connection> {
      const row = await repo.withTenantRead(orgId, (trx) => repo.connection(trx, id));
      if (!row) throw connectionNotFound();
      return show(row);
    },

    async update(orgId: string, id: string, patch: ConnectionPatch, ctx: TenantActorContext): Promise<Connection> {
      const row = await repo.withTenant(orgId, async (trx) => {
        const before = await repo.connection(trx, id);
        if (!before) throw connectionNotFound();
        const after = await repo.updateConnection(trx, id, patch);
        if (!after) throw connectionNotFound();
        const changes: Record<string, unknown> = {};
        for (const k of Object.keys(patch) as Array<keyof ConnectionPatch>) changes[k] = { from: before[k], to: after[k] };
        await audit.record(trx, { orgId, action: 'sso.connection_updated', target: { type: 'sso_connection', id }, changes, context: ctx });
        return after;
      });
      return show(row);
    },

    async remove(orgId: string, id: string, ctx: TenantActorContext): Promise<void> {
      await repo.withTenant(orgId, async (trx) => {
        if (!(await repo.deleteConnection(trx, id))) throw connectionNotFound();
        await audit.record(trx, { orgId, action: 'sso.connection_deleted', target: { type: 'sso_connection', id }, context: ctx });
      });
    },
  };
}
