import { sql, type Kysely } from 'kysely';
import { grantApp, protectTenantTable } from '../src/platform/migrate/helpers.ts';

export const phase = 'expand';

const ROLES = sql.raw(`('owner', 'admin', 'member', 'viewer', 'billing')`);

/**
 * SSO (sso module): per-org connections (OIDC or SAML), the short-lived login states of SP-initiated
 * flows, the ids of consumed assertions/codes (replay), and verified domains. Tenant-owned under RLS,
 * except `sso_enforced_domains`: the global "this e-mail domain must use SSO" list the password login
 * reads before it knows any org (written only together with the org's verified domain row).
 */
export async function up(db: Kysely<any>): Promise<void> {
  await sql`
    create table sso_connections (
      tenant_id uuid not null,
      id uuid not null,
      protocol text not null check (protocol in ('oidc', 'saml')),
      name text not null check (length(name) between 1 and 100),
      enabled boolean not null default true,
      config jsonb not null,
      secret_ciphertext text,
      default_role text not null check (default_role in ${ROLES}),
      groups_attribute text check (length(groups_attribute) <= 200),
      role_mapping jsonb not null default '{}',
      created_by uuid not null,
      created_at timestamptz not null default now(),
      updated_at timestamptz not null default now(),
      primary key (tenant_id, id)
    )`.execute(db);
  await protectTenantTable(db, 'sso_connections');

  await sql`
    create table sso_login_states (
      tenant_id uuid not null,
      id uuid not null,
      connection_id uuid not null,
      state_hash text not null,
      nonce text,
      code_verifier text,
      request_id text,
      expires_at timestamptz not null,
      consumed_at timestamptz,
      created_at timestamptz not null default now(),
      primary key (tenant_id, id),
      unique (tenant_id, state_hash)
    )`.execute(db);
  await protectTenantTable(db, 'sso_login_states', ['select', 'insert', 'update', 'delete']);

  // Primary key = the replay check: a second insert of the same message id fails.
  await sql`
    create table sso_replay_guard (
      tenant_id uuid not null,
      connection_id uuid not null,
      message_id text not null check (length(message_id) <= 300),
      expires_at timestamptz not null,
      primary key (tenant_id, connection_id, message_id)
    )`.execute(db);
  await protectTenantTable(db, 'sso_replay_guard', ['select', 'insert', 'delete']);

  await sql`
    create table org_domains (
      tenant_id uuid not null,
      id uuid not null,
      domain text not null check (domain = lower(domain) and length(domain) between 3 and 253),
      verification_token text not null,
      verified_at timestamptz,
      sso_enforced boolean not null default false,
      created_by uuid not null,
      created_at timestamptz not null default now(),
      updated_at timestamptz not null default now(),
      primary key (tenant_id, id),
      unique (tenant_id, domain)
    )`.execute(db);
  // A domain is verified by at most one org (checked across tenants by the index, whatever RLS shows).
  await sql`create unique index org_domains_verified_once on org_domains (domain) where verified_at is not null`.execute(db);
  await protectTenantTable(db, 'org_domains');

  await sql`
    create table sso_enforced_domains (
      domain text primary key,
      tenant_id uuid not null,
      created_at timestamptz not null default now()
    )`.execute(db);
  await grantApp(db, 'sso_enforced_domains', ['select', 'insert', 'delete']);
}
