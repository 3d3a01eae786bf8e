import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { sql, type Kysely } from 'kysely';

export const MIGRATIONS_DIR = fileURLToPath(new URL('../../../migrations/', import.meta.url));

/** Arbitrary constant: the advisory lock that serializes migrators across processes. */
const MIGRATION_LOCK_KEY = 7_243_001;

export interface MigrationContext {
  kind: 'pglite' | 'postgres';
}

export interface MigrationModule {
  up(db: Kysely<any>, ctx: MigrationContext): Promise<void>;
  /** Set false for statements that cannot run in a transaction (CREATE INDEX CONCURRENTLY). */
  transactional?: boolean;
}

export interface MigrationFile {
  name: string;
  file: string;
  checksum: string;
}

export class MigrationError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'MigrationError';
  }
}

const FILE_PATTERN = /^\d{4}_[a-z0-9]+(?:_[a-z0-9]+)*\.ts$/;

export function listMigrationFiles(dir = MIGRATIONS_DIR): MigrationFile[] {
  return fs
    .readdirSync(dir)
    .filter((f) => FILE_PATTERN.test(f))
    .sort()
    .map((f) => {
      const file = path.join(dir, f);
      // Line endings normalized so a checkout on another OS does not look like an edited migration.
      const text = fs.readFileSync(file, 'utf8').replace(/\r\n/g, '\n');
      return { name: f.replace(/\.ts$/, ''), file, checksum: createHash('sha256').update(text).digest('hex') };
    });
}

/** Reads the applied history and refuses a changed or vanished migration file. */
async function verifyHistory(conn: Kysely<any>, files: MigrationFile[]): Promise<Map<string, string>> {
  const { rows } = await sql<{ name: string; checksum: string }>`
    select name, checksum from plinth_migrations order by name`.execute(conn);
  const applied = new Map(rows.map((r) => [r.name, r.checksum]));
  const known = new Set(files.map((f) => f.name));
  for (const name of applied.keys()) {
    if (!known.has(name)) {
      throw new MigrationError(`Migration ${name} was applied to this database but its file is missing`);
    }
  }
  for (const f of files) {
    const sum = applied.get(f.name);
    if (sum !== undefined && sum !== f.checksum) {
      throw new MigrationError(
        `Migration ${f.name} changed after it was applied (checksum mismatch); add a new migration instead`,
      );
    }
  }
  return applied;
}

/**
 * For processes that do not migrate themselves (MIGRATE_ON_START=false): start only on a schema that
 * matches this code exactly — no edited, missing or pending migrations.
 */
export async function checkMigrations(owner: Kysely<any>, opts: { dir?: string } = {}): Promise<void> {
  const files = listMigrationFiles(opts.dir);
  const exists = await sql<{ t: string | null }>`select to_regclass('plinth_migrations')::text as t`.execute(owner);
  if (!exists.rows[0]?.t) throw new MigrationError('The database has no migrations applied; run `plinth migrate` first');
  const applied = await verifyHistory(owner, files);
  const pending = files.filter((f) => !applied.has(f.name)).map((f) => f.name);
  if (pending.length > 0) {
    throw new MigrationError(`Pending migrations ${pending.join(', ')}; run \`plinth migrate\` first`);
  }
}

export interface MigrateResult {
  applied: string[];
  alreadyApplied: number;
}

/**
 * Applies pending migrations in order, each in its own transaction, as the owner role.
 * Stops with MigrationError when an applied migration's file changed or disappeared: history is
 * forward-only, and a silently different schema is worse than a refused start.
 */
export async function migrate(
  owner: Kysely<any>,
  ctx: MigrationContext,
  opts: { dir?: string; log?: (msg: string) => void } = {},
): Promise<MigrateResult> {
  const files = listMigrationFiles(opts.dir);
  return owner.connection().execute(async (conn) => {
    await sql`create table if not exists plinth_migrations (
      name text primary key,
      checksum text not null,
      applied_at timestamptz not null default now()
    )`.execute(conn);
    await sql`select pg_advisory_lock(${MIGRATION_LOCK_KEY})`.execute(conn);
    try {
      const applied = await verifyHistory(conn, files);
      const result: MigrateResult = { applied: [], alreadyApplied: applied.size };
      for (const f of files) {
        if (applied.has(f.name)) continue;
        const mod = (await import(pathToFileURL(f.file).href)) as MigrationModule;
        if (typeof mod.up !== 'function') throw new MigrationError(`Migration ${f.name} exports no up()`);
        const record = sql`insert into plinth_migrations (name, checksum) values (${f.name}, ${f.checksum})`;
        if (mod.transactional === false) {
          await mod.up(conn, ctx);
          await record.execute(conn);
        } else {
          await conn.transaction().execute(async (trx) => {
            await mod.up(trx, ctx);
            await record.execute(trx);
          });
        }
        opts.log?.(`applied migration ${f.name}`);
        result.applied.push(f.name);
      }
      return result;
    } finally {
      await sql`select pg_advisory_unlock(${MIGRATION_LOCK_KEY})`.execute(conn);
    }
  });
}
