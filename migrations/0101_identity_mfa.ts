import { sql, type Kysely } from 'kysely';
import { grantApp } from '../src/platform/migrate/helpers.ts';

export const phase = 'expand';

/**
 * MFA (identity): a TOTP factor per user (secret AES-256-GCM encrypted: it must be usable, so it cannot be
 * hashed), its one-time recovery codes (SHA-256, each usable once), and the short-lived challenges a
 * password login hands out when a second factor is needed. Global tables, like users.
 */
export async function up(db: Kysely<any>): Promise<void> {
  await sql`
    create table user_mfa (
      user_id uuid primary key references users (id) on delete cascade,
      secret_ciphertext text not null,
      enabled_at timestamptz,
      last_step bigint,
      created_at timestamptz not null default now(),
      updated_at timestamptz not null default now()
    )`.execute(db);
  await grantApp(db, 'user_mfa', ['select', 'insert', 'update', 'delete']);

  await sql`
    create table user_recovery_codes (
      user_id uuid not null references users (id) on delete cascade,
      code_hash text not null,
      used_at timestamptz,
      primary key (user_id, code_hash)
    )`.execute(db);
  await grantApp(db, 'user_recovery_codes', ['select', 'insert', 'update', 'delete']);

  await sql`
    create table mfa_challenges (
      id uuid primary key,
      user_id uuid not null references users (id) on delete cascade,
      token_hash text not null unique,
      ip text,
      user_agent text,
      attempts integer not null default 0,
      expires_at timestamptz not null,
      consumed_at timestamptz,
      created_at timestamptz not null default now()
    )`.execute(db);
  await grantApp(db, 'mfa_challenges', ['select', 'insert', 'update']);

  // Sessions remember when the second factor was last proved (step-up for sensitive actions).
  await sql`alter table sessions add column mfa_at timestamptz`.execute(db);
}
