import { sql, type Kysely } from 'kysely';
import { grantApp } from '../src/platform/migrate/helpers.ts';

export const phase = 'expand';

/**
 * WebAuthn / passkeys (identity): the public-key credentials users register (a second factor, and a
 * passwordless sign-in when the credential is discoverable), and the challenges the server hands out for
 * registration and assertion (stored as SHA-256, single use, a few minutes). Global tables, like users.
 */
export async function up(db: Kysely<any>): Promise<void> {
  await sql`
    create table webauthn_credentials (
      id uuid primary key,
      user_id uuid not null references users (id) on delete cascade,
      credential_id text not null unique,
      public_key bytea not null,
      sign_count bigint not null default 0,
      transports text[] not null default '{}',
      aaguid text,
      device_type text not null,
      backed_up boolean not null default false,
      name text not null,
      created_at timestamptz not null default now(),
      last_used_at timestamptz
    )`.execute(db);
  await sql`create index webauthn_credentials_user_idx on webauthn_credentials (user_id, created_at)`.execute(db);
  await grantApp(db, 'webauthn_credentials', ['select', 'insert', 'update', 'delete']);

  await sql`
    create table webauthn_challenges (
      id uuid primary key,
      challenge_hash text not null unique,
      purpose text not null check (purpose in ('register', 'second_factor', 'step_up', 'passwordless')),
      user_id uuid references users (id) on delete cascade,
      mfa_challenge_id uuid references mfa_challenges (id) on delete cascade,
      expires_at timestamptz not null,
      consumed_at timestamptz,
      created_at timestamptz not null default now()
    )`.execute(db);
  await sql`create index webauthn_challenges_expiry_idx on webauthn_challenges (expires_at)`.execute(db);
  await sql`create index webauthn_challenges_user_idx on webauthn_challenges (user_id)`.execute(db);
  await grantApp(db, 'webauthn_challenges', ['select', 'insert', 'update', 'delete']);
}
