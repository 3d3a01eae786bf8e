import { sql, type Kysely } from 'kysely';
import { protectTenantTable } from '../src/platform/migrate/helpers.ts';

export const phase = 'expand';

/**
 * One security policy per org (sso module): MFA required, session lifetime and idle timeout for the org's
 * resources, and an IP allow-list (CIDRs) for sessions and API keys. Read per request through the cache.
 */
export async function up(db: Kysely<any>): Promise<void> {
  await sql`
    create table org_security_policies (
      tenant_id uuid not null,
      id uuid not null check (id = tenant_id),
      mfa_required boolean not null default false,
      session_max_age_sec integer check (session_max_age_sec between 300 and 2592000),
      idle_timeout_sec integer check (idle_timeout_sec between 60 and 2592000),
      idle_since timestamptz,
      ip_allow_list jsonb not null default '[]',
      updated_by uuid not null,
      updated_at timestamptz not null default now(),
      primary key (tenant_id, id)
    )`.execute(db);
  await protectTenantTable(db, 'org_security_policies', ['select', 'insert', 'update']);
}
