import { sql, type Selectable, type Transaction } from 'kysely';
import type { Database, DB, DbScope } from '../../platform/db/database.ts';

/** The tables sso owns: four tenant tables (RLS) and the global enforced-domain list. */
export type SsoTables = Pick<DB, 'sso_connections' | 'sso_login_states' | 'sso_replay_guard' | 'org_domains' | 'sso_enforced_domains' | 'org_security_policies'>;
export type SsoTx = Transaction<SsoTables>;

export interface OidcConfig {
  issuer: string;
  clientId: string;
}
export interface SamlConfig {
  idpEntityId: string;
  idpSsoUrl: string;
  idpCert: string;
  allowIdpInitiated: boolean;
}

export interface ConnectionRow {
  id: string;
  orgId: string;
  protocol: 'oidc' | 'saml';
  name: string;
  enabled: boolean;
  config: OidcConfig | SamlConfig;
  secretCiphertext: string | null;
  defaultRole: string;
  groupsAttribute: string | null;
  roleMapping: Record<string, string>;
  createdAt: Date;
  updatedAt: Date;
}

export interface LoginStateRow {
  id: string;
  connectionId: string;
  nonce: string | null;
  codeVerifier: string | null;
  requestId: string | null;
  expiresAt: Date;
  consumedAt: Date | null;
}

export interface SecurityPolicy {
  mfaRequired: boolean;
  sessionMaxAgeSec: number | null;
  idleTimeoutSec: number | null;
  /** When the idle timeout was (re)set: sessions are not idle "since before" the policy existed. */
  idleSince: Date | null;
  ipAllowList: string[];
  updatedAt: Date | null;
}

export const NO_POLICY: SecurityPolicy = { mfaRequired: false, sessionMaxAgeSec: null, idleTimeoutSec: null, idleSince: null, ipAllowList: [], updatedAt: null };

export interface DomainRow {
  id: string;
  domain: string;
  verificationToken: string;
  verifiedAt: Date | null;
  ssoEnforced: boolean;
  createdAt: Date;
}

const json = <T>(v: unknown): T => (typeof v === 'string' ? JSON.parse(v) : v) as T;

const toConnection = (r: Selectable<SsoTables['sso_connections']>): ConnectionRow => ({
  id: r.id,
  orgId: r.tenant_id,
  protocol: r.protocol as ConnectionRow['protocol'],
  name: r.name,
  enabled: r.enabled,
  config: json(r.config),
  secretCiphertext: r.secret_ciphertext,
  defaultRole: r.default_role,
  groupsAttribute: r.groups_attribute,
  roleMapping: json(r.role_mapping),
  createdAt: new Date(r.created_at),
  updatedAt: new Date(r.updated_at),
});

const toDomain = (r: Selectable<SsoTables['org_domains']>): DomainRow => ({
  id: r.id,
  domain: r.domain,
  verificationToken: r.verification_token,
  verifiedAt: r.verified_at ? new Date(r.verified_at) : null,
  ssoEnforced: r.sso_enforced,
  createdAt: new Date(r.created_at),
});

/** All SQL of the sso module. */
export function createSsoRepo(db: Database) {
  const scope: DbScope<SsoTables> = db.scope('sso_connections', 'sso_login_states', 'sso_replay_guard', 'org_domains', 'sso_enforced_domains', 'org_security_policies');

  return {
    withTenant: <R>(orgId: string, fn: (trx: SsoTx) => Promise<R>) => scope.withTenant(orgId, fn),
    withTenantRead: <R>(orgId: string, fn: (trx: SsoTx) => Promise<R>) => scope.withTenantRead(orgId, fn),

    // ── connections ──
    async insertConnection(trx: SsoTx, c: Omit<ConnectionRow, 'createdAt' | 'updatedAt' | 'enabled'> & { createdBy: string }): Promise<ConnectionRow> {
      const row = await trx
        .insertInto('sso_connections')
        .values({
          tenant_id: c.orgId,
          id: c.id,
          protocol: c.protocol,
          name: c.name,
          config: JSON.stringify(c.config),
          secret_ciphertext: c.secretCiphertext,
          default_role: c.defaultRole,
          groups_attribute: c.groupsAttribute,
          role_mapping: JSON.stringify(c.roleMapping),
          created_by: c.createdBy,
        })
        .returningAll()
        .executeTakeFirstOrThrow();
      return toConnection(row);
    },

    async connection(trx: SsoTx, id: string): Promise<ConnectionRow | null> {
      const row = await trx.selectFrom('sso_connections').selectAll().where('id', '=', id).executeTakeFirst();
      return row ? toConnection(row) : null;
    },

    async listConnections(trx: SsoTx): Promise<ConnectionRow[]> {
      const rows = await trx.selectFrom('sso_connections').selectAll().orderBy('id').limit(100).execute();
      return rows.map(toConnection);
    },

    async updateConnection(
      trx: SsoTx,
      id: string,
      patch: Partial<{ name: string; enabled: boolean; defaultRole: string; groupsAttribute: string | null; roleMapping: Record<string, string> }>,
    ): Promise<ConnectionRow | null> {
      const row = await trx
        .updateTable('sso_connections')
        .set({
          ...(patch.name !== undefined ? { name: patch.name } : {}),
          ...(patch.enabled !== undefined ? { enabled: patch.enabled } : {}),
          ...(patch.defaultRole !== undefined ? { default_role: patch.defaultRole } : {}),
          ...(patch.groupsAttribute !== undefined ? { groups_attribute: patch.groupsAttribute } : {}),
          ...(patch.roleMapping !== undefined ? { role_mapping: JSON.stringify(patch.roleMapping) } : {}),
          updated_at: new Date(),
        })
        .where('id', '=', id)
        .returningAll()
        .executeTakeFirst();
      return row ? toConnection(row) : null;
    },

    async deleteConnection(trx: SsoTx, id: string): Promise<boolean> {
      await trx.deleteFrom('sso_login_states').where('connection_id', '=', id).execute();
      await trx.deleteFrom('sso_replay_guard').where('connection_id', '=', id).execute();
      const res = await trx.deleteFrom('sso_connections').where('id', '=', id).executeTakeFirst();
      return Number(res.numDeletedRows) > 0;
    },

    // ── login states (SP-initiated flows) ──
    async insertLoginState(trx: SsoTx, s: { orgId: string; id: string; connectionId: string; stateHash: string; nonce?: string; codeVerifier?: string; requestId?: string; expiresAt: Date }): Promise<void> {
      // Expired states of this connection are pruned as new ones are written (no sweeper needed).
      await trx.deleteFrom('sso_login_states').where('connection_id', '=', s.connectionId).where('expires_at', '<', sql<Date>`now() - interval '1 hour'`).execute();
      await trx.deleteFrom('sso_replay_guard').where('connection_id', '=', s.connectionId).where('expires_at', '<', sql<Date>`now()`).execute();
      await trx
        .insertInto('sso_login_states')
        .values({
          tenant_id: s.orgId,
          id: s.id,
          connection_id: s.connectionId,
          state_hash: s.stateHash,
          nonce: s.nonce ?? null,
          code_verifier: s.codeVerifier ?? null,
          request_id: s.requestId ?? null,
          expires_at: s.expiresAt,
        })
        .execute();
    },

    /** Marks the state consumed and returns it; null when unknown or already consumed (one use only). */
    async consumeLoginState(trx: SsoTx, stateHash: string): Promise<LoginStateRow | null> {
      const row = await trx
        .updateTable('sso_login_states')
        .set({ consumed_at: new Date() })
        .where('state_hash', '=', stateHash)
        .where('consumed_at', 'is', null)
        .returning(['id', 'connection_id', 'nonce', 'code_verifier', 'request_id', 'expires_at', 'consumed_at'])
        .executeTakeFirst();
      if (!row) return null;
      return {
        id: row.id,
        connectionId: row.connection_id,
        nonce: row.nonce,
        codeVerifier: row.code_verifier,
        requestId: row.request_id,
        expiresAt: new Date(row.expires_at),
        consumedAt: row.consumed_at,
      };
    },

    /** false when this message id was already seen for the connection (a replay). */
    async rememberMessage(trx: SsoTx, m: { orgId: string; connectionId: string; messageId: string; expiresAt: Date }): Promise<boolean> {
      const inserted = await trx
        .insertInto('sso_replay_guard')
        .values({ tenant_id: m.orgId, connection_id: m.connectionId, message_id: m.messageId, expires_at: m.expiresAt })
        .onConflict((oc) => oc.columns(['tenant_id', 'connection_id', 'message_id']).doNothing())
        .returning('message_id')
        .executeTakeFirst();
      return inserted !== undefined;
    },

    // ── security policy ──
    async policy(trx: SsoTx): Promise<SecurityPolicy> {
      const r = await trx.selectFrom('org_security_policies').selectAll().executeTakeFirst();
      if (!r) return NO_POLICY;
      return {
        mfaRequired: r.mfa_required,
        sessionMaxAgeSec: r.session_max_age_sec,
        idleTimeoutSec: r.idle_timeout_sec,
        idleSince: r.idle_since ? new Date(r.idle_since) : null,
        ipAllowList: json<string[]>(r.ip_allow_list),
        updatedAt: new Date(r.updated_at),
      };
    },

    async upsertPolicy(trx: SsoTx, orgId: string, p: Omit<SecurityPolicy, 'updatedAt'>, updatedBy: string): Promise<void> {
      const values = {
        mfa_required: p.mfaRequired,
        session_max_age_sec: p.sessionMaxAgeSec,
        idle_timeout_sec: p.idleTimeoutSec,
        idle_since: p.idleSince,
        ip_allow_list: JSON.stringify(p.ipAllowList),
        updated_by: updatedBy,
        updated_at: new Date(),
      };
      await trx
        .insertInto('org_security_policies')
        .values({ tenant_id: orgId, id: orgId, ...values })
        .onConflict((oc) => oc.columns(['tenant_id', 'id']).doUpdateSet(values))
        .execute();
    },

    // ── domains ──
    /** Throws the driver's unique violation when the org already has the domain. */
    async insertDomain(trx: SsoTx, d: { orgId: string; id: string; domain: string; verificationToken: string; createdBy: string }): Promise<DomainRow> {
      const row = await trx
        .insertInto('org_domains')
        .values({ tenant_id: d.orgId, id: d.id, domain: d.domain, verification_token: d.verificationToken, created_by: d.createdBy })
        .returningAll()
        .executeTakeFirstOrThrow();
      return toDomain(row);
    },

    async domain(trx: SsoTx, id: string): Promise<DomainRow | null> {
      const row = await trx.selectFrom('org_domains').selectAll().where('id', '=', id).executeTakeFirst();
      return row ? toDomain(row) : null;
    },

    async listDomains(trx: SsoTx): Promise<DomainRow[]> {
      const rows = await trx.selectFrom('org_domains').selectAll().orderBy('id').limit(100).execute();
      return rows.map(toDomain);
    },

    async verifiedDomainNames(trx: SsoTx): Promise<string[]> {
      const rows = await trx.selectFrom('org_domains').select('domain').where('verified_at', 'is not', null).execute();
      return rows.map((r) => r.domain);
    },

    /** Throws the driver's unique violation when another org verified the domain first. */
    async markVerified(trx: SsoTx, id: string): Promise<DomainRow> {
      const row = await trx.updateTable('org_domains').set({ verified_at: new Date(), updated_at: new Date() }).where('id', '=', id).returningAll().executeTakeFirstOrThrow();
      return toDomain(row);
    },

    /** The org's row and the global enforced list change together (same transaction). */
    async setEnforced(trx: SsoTx, orgId: string, d: DomainRow, enforced: boolean): Promise<DomainRow> {
      const row = await trx.updateTable('org_domains').set({ sso_enforced: enforced, updated_at: new Date() }).where('id', '=', d.id).returningAll().executeTakeFirstOrThrow();
      if (enforced) {
        await trx.insertInto('sso_enforced_domains').values({ domain: d.domain, tenant_id: orgId }).onConflict((oc) => oc.column('domain').doNothing()).execute();
      } else {
        await trx.deleteFrom('sso_enforced_domains').where('domain', '=', d.domain).where('tenant_id', '=', orgId).execute();
      }
      return toDomain(row);
    },

    async deleteDomain(trx: SsoTx, orgId: string, d: DomainRow): Promise<void> {
      await trx.deleteFrom('sso_enforced_domains').where('domain', '=', d.domain).where('tenant_id', '=', orgId).execute();
      await trx.deleteFrom('org_domains').where('id', '=', d.id).execute();
    },

    /** The org that enforces SSO for this e-mail domain, if any (global table: no tenant context). */
    async enforcingOrg(domain: string): Promise<string | null> {
      const row = await scope.app.selectFrom('sso_enforced_domains').select('tenant_id').where('domain', '=', domain).executeTakeFirst();
      return row?.tenant_id ?? null;
    },
  };
}

export type SsoRepo = ReturnType<typeof createSsoRepo>;
