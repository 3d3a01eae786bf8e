import { sql, type Kysely } from 'kysely';
import { protectTenantTable } from '../src/platform/migrate/helpers.ts';

/** The app-role-visible "who am I" setting, used only by the memberships self policy below. */
const SELF = sql.raw(`nullif(current_setting('app.user_id', true), '')::uuid`);

/**
 * Organizations are the tenants (tenant_id = id). Memberships, invitations and API keys are tenant-owned.
 * One extra, read-only policy lets a transaction that declares `app.user_id` see that user's own
 * memberships (and the orgs they belong to) across tenants — what GET /v1/me needs, nothing more.
 */
export async function up(db: Kysely<any>): Promise<void> {
  await sql`
    create table organizations (
      tenant_id uuid not null check (tenant_id = id),
      id uuid not null,
      name text not null check (length(name) between 1 and 100),
      created_by uuid not null,
      created_at timestamptz not null default now(),
      updated_at timestamptz not null default now(),
      primary key (tenant_id, id)
    )`.execute(db);
  await protectTenantTable(db, 'organizations', ['select', 'insert', 'update']);

  await sql`
    create table memberships (
      tenant_id uuid not null,
      id uuid not null,
      user_id uuid not null,
      role text not null check (role in ('owner', 'admin', 'member', 'viewer', 'billing')),
      created_at timestamptz not null default now(),
      updated_at timestamptz not null default now(),
      primary key (tenant_id, id),
      unique (tenant_id, user_id)
    )`.execute(db);
  await sql`create index memberships_user_idx on memberships (user_id)`.execute(db);
  await protectTenantTable(db, 'memberships');
  await sql`create policy member_self_read on memberships for select using (user_id = ${SELF})`.execute(db);
  await sql`
    create policy member_self_read on organizations for select using (
      exists (select 1 from memberships m where m.tenant_id = organizations.id and m.user_id = ${SELF})
    )`.execute(db);

  await sql`
    create table invitations (
      tenant_id uuid not null,
      id uuid not null,
      email text not null,
      role text not null check (role in ('owner', 'admin', 'member', 'viewer', 'billing')),
      token_hash text not null,
      invited_by uuid not null,
      expires_at timestamptz not null,
      accepted_at timestamptz,
      accepted_by uuid,
      revoked_at timestamptz,
      created_at timestamptz not null default now(),
      primary key (tenant_id, id),
      unique (tenant_id, token_hash)
    )`.execute(db);
  await protectTenantTable(db, 'invitations', ['select', 'insert', 'update']);

  await sql`
    create table api_keys (
      tenant_id uuid not null,
      id uuid not null,
      name text not null check (length(name) between 1 and 100),
      prefix text not null,
      key_hash text not null,
      scopes jsonb not null,
      created_by uuid not null,
      expires_at timestamptz,
      last_used_at timestamptz,
      revoked_at timestamptz,
      created_at timestamptz not null default now(),
      primary key (tenant_id, id),
      unique (tenant_id, key_hash)
    )`.execute(db);
  await protectTenantTable(db, 'api_keys', ['select', 'insert', 'update']);
}
