import { sql, type Kysely } from 'kysely';
import { protectTenantTable } from '../src/platform/migrate/helpers.ts';

export const phase = 'expand';

/**
 * SCIM 2.0 directory sync (directory module): per-org bearer tokens (stored as SHA-256), the SCIM view of
 * provisioned users and groups (linked to identity users by id, no cross-module foreign key), group
 * membership, and the org's group → role mapping. All tenant-owned: composite keys and RLS.
 */
export async function up(db: Kysely<any>): Promise<void> {
  await sql`
    create table scim_tokens (
      tenant_id uuid not null,
      id uuid not null,
      name text not null check (char_length(name) between 1 and 100),
      token_hash text not null,
      created_by uuid,
      created_at timestamptz(3) not null default now(),
      last_used_at timestamptz(3),
      revoked_at timestamptz(3),
      primary key (tenant_id, id),
      unique (tenant_id, token_hash)
    )`.execute(db);
  await protectTenantTable(db, 'scim_tokens');

  await sql`
    create table scim_users (
      tenant_id uuid not null,
      id uuid not null,
      user_id uuid not null,
      user_name text not null check (char_length(user_name) between 1 and 256),
      user_name_key text not null,
      external_id text check (char_length(external_id) <= 256),
      display_name text check (char_length(display_name) <= 256),
      given_name text check (char_length(given_name) <= 256),
      family_name text check (char_length(family_name) <= 256),
      email text not null check (char_length(email) <= 320),
      active boolean not null default true,
      version integer not null default 1,
      created_at timestamptz(3) not null default now(),
      updated_at timestamptz(3) not null default now(),
      primary key (tenant_id, id),
      unique (tenant_id, user_name_key),
      unique (tenant_id, user_id)
    )`.execute(db);
  await protectTenantTable(db, 'scim_users');

  await sql`
    create table scim_groups (
      tenant_id uuid not null,
      id uuid not null,
      display_name text not null check (char_length(display_name) between 1 and 256),
      external_id text check (char_length(external_id) <= 256),
      version integer not null default 1,
      created_at timestamptz(3) not null default now(),
      updated_at timestamptz(3) not null default now(),
      primary key (tenant_id, id),
      unique (tenant_id, display_name)
    )`.execute(db);
  await protectTenantTable(db, 'scim_groups');

  await sql`
    create table scim_group_members (
      tenant_id uuid not null,
      group_id uuid not null,
      scim_user_id uuid not null,
      primary key (tenant_id, group_id, scim_user_id),
      foreign key (tenant_id, group_id) references scim_groups (tenant_id, id) on delete cascade,
      foreign key (tenant_id, scim_user_id) references scim_users (tenant_id, id) on delete cascade
    )`.execute(db);
  // A user's groups (role computation, cascade on user delete).
  await sql`create index scim_group_members_by_user on scim_group_members (tenant_id, scim_user_id)`.execute(db);
  await protectTenantTable(db, 'scim_group_members');

  await sql`
    create table scim_group_roles (
      tenant_id uuid not null,
      group_name text not null check (char_length(group_name) between 1 and 256),
      role text not null check (role in ('admin', 'member', 'viewer', 'billing')),
      primary key (tenant_id, group_name)
    )`.execute(db);
  await protectTenantTable(db, 'scim_group_roles');
}
