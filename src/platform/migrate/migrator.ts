import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { sql, type Kysely, type QueryExecutorProvider } from 'kysely';
import type { DB } from '../db/schema.generated.ts';

export const MIGRATIONS_DIR = fileURLToPath(new URL('../../../migrations/', import.meta.url));

/** Arbitrary constant: the advisory lock that serializes migrators across processes. */
const MIGRATION_LOCK_KEY = 7_243_001;

export interface MigrationContext {
  kind: 'pglite' | 'postgres';
}

export interface MigrationModule {
  // Migration files are typed Kysely<any> and checksummed (never edited): they define the schema the
  // generated types describe, so they cannot be typed by them.
  up(db: Kysely<any>, ctx: MigrationContext): Promise<void>;
  /** Set false for statements that cannot run in a transaction (CREATE INDEX CONCURRENTLY). */
  transactional?: boolean;
  /**
   * 'expand': only adds things the previous release ignores (new tables, nullable columns, indexes), so
   * that release may still run on the migrated schema — rollback works. Recorded when applied; an older
   * release accepts an applied migration it does not know only when it was recorded as 'expand'.
   * Anything else (the default, 'contract') drops or changes what older code relies on.
   */
  phase?: MigrationPhase;
}

export type MigrationPhase = 'expand' | 'contract';

export interface MigrationFile {
  name: string;
  file: string;
  /** sha256 of the TypeScript source, also for a compiled build (read from its checksums.json). */
  checksum: string;
}

export class MigrationError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'MigrationError';
  }
}

/** Sources are `.ts`; the compiled build (dist/migrations) has `.js` files plus a checksums.json. */
const FILE_PATTERN = /^\d{4}_[a-z0-9]+(?:_[a-z0-9]+)*\.(ts|js)$/;
export const CHECKSUMS_FILE = 'checksums.json';
/** How long a migration waits for a table lock before failing (MIGRATION_LOCK_TIMEOUT_MS). */
export const DEFAULT_MIGRATION_LOCK_TIMEOUT_MS = 5_000;

export function listMigrationFiles(dir = MIGRATIONS_DIR): MigrationFile[] {
  // A compiled migration's checksum must be its source's, or a database migrated from source would look
  // edited to the compiled build (and back): the build records the source checksums beside the .js files.
  const manifestPath = path.join(dir, CHECKSUMS_FILE);
  const manifest = fs.existsSync(manifestPath)
    ? (JSON.parse(fs.readFileSync(manifestPath, 'utf8')) as Record<string, string>)
    : undefined;
  return fs
    .readdirSync(dir)
    .filter((f) => FILE_PATTERN.test(f))
    .sort()
    .map((f) => {
      const file = path.join(dir, f);
      const name = f.replace(/\.(ts|js)$/, '');
      if (manifest) {
        const checksum = manifest[name];
        if (!checksum) throw new MigrationError(`Migration ${name} is not listed in ${manifestPath}; rebuild`);
        return { name, file, checksum };
      }
      // Line endings normalized so a checkout on another OS does not look like an edited migration.
      const text = fs.readFileSync(file, 'utf8').replace(/\r\n/g, '\n');
      return { name, file, checksum: createHash('sha256').update(text).digest('hex') };
    });
}

/**
 * Reads the applied history and refuses a changed or vanished migration file. An applied migration this
 * code does not know is accepted when it was recorded as an expand step (a newer release ran it and
 * this one is the rollback target); `newer` lists those.
 */
async function verifyHistory(
  conn: QueryExecutorProvider,
  files: MigrationFile[],
): Promise<{ applied: Map<string, string>; newer: string[] }> {
  // to_jsonb(m)->>'phase' reads the column when it exists and null on a table created before it did.
  const { rows } = await sql<{ name: string; checksum: string; phase: string | null }>`
    select name, checksum, to_jsonb(m)->>'phase' as phase from plinth_migrations m order by name`.execute(conn);
  const applied = new Map(rows.map((r) => [r.name, r.checksum]));
  const known = new Set(files.map((f) => f.name));
  const newer: string[] = [];
  for (const r of rows) {
    if (known.has(r.name)) continue;
    if (r.phase === 'expand') {
      newer.push(r.name);
      continue;
    }
    throw new MigrationError(
      `Migration ${r.name} was applied to this database but its file is missing (and it is not an expand step this release can run beside)`,
    );
  }
  for (const f of files) {
    const sum = applied.get(f.name);
    if (sum !== undefined && sum !== f.checksum) {
      throw new MigrationError(
        `Migration ${f.name} changed after it was applied (checksum mismatch); add a new migration instead`,
      );
    }
  }
  return { applied, newer };
}

/**
 * For processes that do not migrate themselves (MIGRATE_ON_START=false): start only on a schema that
 * matches this code exactly — no edited, missing or pending migrations.
 */
export async function checkMigrations(owner: QueryExecutorProvider, opts: { dir?: string } = {}): Promise<{ newer: string[] }> {
  const files = listMigrationFiles(opts.dir);
  const exists = await sql<{ t: string | null }>`select to_regclass('plinth_migrations')::text as t`.execute(owner);
  if (!exists.rows[0]?.t) throw new MigrationError('The database has no migrations applied; run `plinth migrate` first');
  const { applied, newer } = await verifyHistory(owner, files);
  const pending = files.filter((f) => !applied.has(f.name)).map((f) => f.name);
  if (pending.length > 0) {
    throw new MigrationError(`Pending migrations ${pending.join(', ')}; run \`plinth migrate\` first`);
  }
  return { newer };
}

/**
 * Defaults for the app role in this database, (re)applied by every `migrate`: behind PgBouncer (transaction
 * pooling) the app sends no startup options, so these bound statements outside tenant transactions (which
 * set their own with SET LOCAL). Per database because the role is cluster-wide; not a migration because
 * pg_dump leaves such settings out, so a restored copy gets them back by running migrate.
 */
export const APP_ROLE_DEFAULTS = { statement_timeout: '30s', idle_in_transaction_session_timeout: '60s' } as const;

async function applyAppRoleDefaults(conn: QueryExecutorProvider, ctx: MigrationContext): Promise<void> {
  // The embedded PGlite database has one in-process connection and nothing to bound.
  if (ctx.kind === 'pglite') return;
  for (const [name, value] of Object.entries(APP_ROLE_DEFAULTS)) {
    await sql.raw(`do $$ begin execute format('alter role plinth_app in database %I set ${name} = %L', current_database(), '${value}'); end $$`).execute(conn);
  }
}

export interface MigrateResult {
  applied: string[];
  alreadyApplied: number;
  /** Applied expand steps from a newer release (this one is running after a rollback). */
  newer: string[];
}

/**
 * Applies pending migrations in order, each in its own transaction, as the owner role.
 * Stops with MigrationError when an applied migration's file changed or disappeared: history is
 * forward-only, and a silently different schema is worse than a refused start.
 */
export async function migrate(
  owner: Kysely<DB>,
  ctx: MigrationContext,
  opts: { dir?: string; log?: (msg: string) => void; lockTimeoutMs?: number } = {},
): Promise<MigrateResult> {
  // A migration that needs a lock held by a long transaction gives up (and the job retries) instead of
  // queueing every other query on that table behind its own lock request.
  const lockTimeout = sql.raw(`'${Math.max(1, Math.floor(opts.lockTimeoutMs ?? DEFAULT_MIGRATION_LOCK_TIMEOUT_MS))}ms'`);
  const files = listMigrationFiles(opts.dir);
  return owner.connection().execute(async (conn) => {
    await sql`create table if not exists plinth_migrations (
      name text primary key,
      checksum text not null,
      applied_at timestamptz not null default now()
    )`.execute(conn);
    await sql`select pg_advisory_lock(${MIGRATION_LOCK_KEY})`.execute(conn);
    try {
      await sql`alter table plinth_migrations add column if not exists phase text`.execute(conn);
      const { applied, newer } = await verifyHistory(conn, files);
      const result: MigrateResult = { applied: [], alreadyApplied: applied.size, newer };
      for (const f of files) {
        if (applied.has(f.name)) continue;
        const mod = (await import(pathToFileURL(f.file).href)) as MigrationModule;
        if (typeof mod.up !== 'function') throw new MigrationError(`Migration ${f.name} exports no up()`);
        const phase: MigrationPhase = mod.phase === 'expand' ? 'expand' : 'contract';
        const record = sql`insert into plinth_migrations (name, checksum, phase) values (${f.name}, ${f.checksum}, ${phase})`;
        if (mod.transactional === false) {
          await sql`set lock_timeout = ${lockTimeout}`.execute(conn);
          try {
            await mod.up(conn, ctx);
          } finally {
            await sql`reset lock_timeout`.execute(conn);
          }
          await record.execute(conn);
        } else {
          await conn.transaction().execute(async (trx) => {
            await sql`set local lock_timeout = ${lockTimeout}`.execute(trx);
            await mod.up(trx, ctx);
            await record.execute(trx);
          });
        }
        opts.log?.(`applied migration ${f.name}`);
        result.applied.push(f.name);
      }
      await applyAppRoleDefaults(conn, ctx);
      return result;
    } finally {
      await sql`select pg_advisory_unlock(${MIGRATION_LOCK_KEY})`.execute(conn);
    }
  });
}
