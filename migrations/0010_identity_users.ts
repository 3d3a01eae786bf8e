import { sql, type Kysely } from 'kysely';
import { grantApp } from '../src/platform/migrate/helpers.ts';

/**
 * Identity: users, sessions and login attempts are global (a user belongs to many orgs), so they are not
 * tenant tables. Secrets are stored only as hashes (argon2id for passwords, SHA-256 for random tokens).
 */
export async function up(db: Kysely<any>): Promise<void> {
  await sql`
    create table users (
      id uuid primary key,
      email text not null unique check (email = lower(email) and length(email) between 3 and 254),
      name text not null check (length(name) between 1 and 100),
      password_hash text not null,
      is_platform_admin boolean not null default false,
      disabled_at timestamptz,
      password_changed_at timestamptz not null default now(),
      created_at timestamptz not null default now(),
      updated_at timestamptz not null default now()
    )`.execute(db);
  await grantApp(db, 'users', ['select', 'insert', 'update']);

  await sql`
    create table sessions (
      id uuid primary key,
      user_id uuid not null references users (id) on delete cascade,
      token_hash text not null unique,
      ip text,
      user_agent text,
      created_at timestamptz not null default now(),
      last_used_at timestamptz not null default now(),
      expires_at timestamptz not null,
      revoked_at timestamptz
    )`.execute(db);
  await sql`create index sessions_user_idx on sessions (user_id, created_at)`.execute(db);
  await grantApp(db, 'sessions', ['select', 'insert', 'update']);

  // One row per processed login attempt that has not (yet) succeeded; counted over a sliding hour.
  await sql`
    create table login_attempts (
      id uuid primary key,
      scope text not null check (scope in ('account', 'ip')),
      key text not null,
      attempted_at timestamptz not null default now()
    )`.execute(db);
  await sql`create index login_attempts_key_idx on login_attempts (scope, key, attempted_at)`.execute(db);
  await grantApp(db, 'login_attempts', ['select', 'insert', 'delete']);
}
