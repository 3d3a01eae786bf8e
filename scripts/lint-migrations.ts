/**
 * Migration safety lint (`npm run lint:migrations`, part of `npm run lint`): every migration is applied to
 * a fresh embedded database, the SQL it emits is captured per migration and handed to squawk
 * (https://squawkhq.com), a PostgreSQL migration linter. What it refuses is DDL that blocks traffic on a
 * table that already holds data — an index built without CONCURRENTLY, a column type rewrite, a NOT NULL
 * or a foreign key added without a validated constraint, a rename or a drop the previous release still
 * needs (ADR 0007). Statements on a table created in the same migration are fine (squawk tracks them).
 *
 * The escape hatch is migrations/squawk-exceptions.json: migration name → rule → the reviewed reason.
 * Migrations are checksummed and cannot carry the exception themselves.
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { DummyDriver, Kysely, PostgresAdapter, PostgresIntrospector, PostgresQueryCompiler } from 'kysely';
import type { DB } from '../src/platform/db/schema.generated.ts';
import { listMigrationFiles, MIGRATIONS_DIR, type MigrationModule } from '../src/platform/migrate/migrator.ts';

const ROOT = path.resolve(import.meta.dirname, '..');
export const EXCEPTIONS_FILE = path.join(ROOT, 'migrations/squawk-exceptions.json');
const SQUAWK = path.join(ROOT, 'node_modules/.bin/squawk');

/** Rules about style or robustness, not about locks that block traffic: not what this lint is for. */
const EXCLUDED_RULES = [
  'prefer-robust-stmts',
  'prefer-bigint-over-int',
  'prefer-bigint-over-smallint',
  'prefer-identity',
  'prefer-text-field',
  'prefer-timestamptz',
  'ban-char-field',
  // The migrator sets lock_timeout for every migration (MIGRATION_LOCK_TIMEOUT_MS): a migration waiting for
  // a lock gives up instead of queueing every request behind it. No statement_timeout: a backfill may run
  // long, bounded by the migration Job's activeDeadlineSeconds.
  'require-timeout-settings',
  'require-lock-timeout',
  'require-statement-timeout',
];

export interface Finding {
  migration: string;
  rule: string;
  message: string;
  statement: string;
  excused?: string;
}

/**
 * The SQL each migration sends, in order, compiled for PostgreSQL. No database is needed: each migration's
 * up() runs against a Kysely whose driver answers every query with no rows and records its SQL (a
 * migration that reads rows to backfill sees none, which is all the lint needs).
 */
export async function migrationSql(dir = MIGRATIONS_DIR): Promise<{ name: string; sql: string[]; transactional: boolean }[]> {
  const out: { name: string; sql: string[]; transactional: boolean }[] = [];
  for (const f of listMigrationFiles(dir)) {
    const mod = (await import(pathToFileURL(f.file).href)) as MigrationModule;
    const sqlText: string[] = [];
    const db = new Kysely<DB>({
      dialect: {
        createAdapter: () => new PostgresAdapter(),
        createDriver: () => new DummyDriver(),
        createIntrospector: (k) => new PostgresIntrospector(k),
        createQueryCompiler: () => new PostgresQueryCompiler(),
      },
      log: (event) => void sqlText.push(event.query.sql),
    });
    await mod.up(db, { kind: 'postgres' });
    await db.destroy();
    out.push({ name: f.name, sql: sqlText.filter((s) => !isBookkeeping(s)), transactional: mod.transactional !== false });
  }
  return out;
}

function isBookkeeping(s: string): boolean {
  return /plinth_migrations|pg_advisory_(un)?lock|^\s*(begin|commit|rollback)\b|^\s*set local (lock_timeout|statement_timeout)/i.test(s);
}

export function readExceptions(file = EXCEPTIONS_FILE): Record<string, Record<string, string>> {
  return fs.existsSync(file) ? (JSON.parse(fs.readFileSync(file, 'utf8')) as Record<string, Record<string, string>>) : {};
}

/** Marks the findings a reviewed exception excuses (migration → rule → reason). */
export function applyExceptions(findings: Finding[], exceptions: Record<string, Record<string, string>>): Finding[] {
  return findings.map((f) => ({ ...f, excused: exceptions[f.migration]?.[f.rule] }));
}

/** Runs squawk over the captured SQL; returns every finding, with the reviewed reason where one excuses it. */
export async function lintMigrations(opts: { dir?: string; exceptions?: Record<string, Record<string, string>> } = {}): Promise<Finding[]> {
  const migrations = await migrationSql(opts.dir);
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'plinth-squawk-'));
  const findings: Finding[] = [];
  try {
    for (const inTx of [true, false]) {
      const batch = migrations.filter((m) => m.transactional === inTx && m.sql.length > 0);
      if (batch.length === 0) continue;
      const files = batch.map((m) => {
        const file = path.join(tmp, `${m.name}.sql`);
        fs.writeFileSync(file, m.sql.map((s) => `${s.trim().replace(/;\s*$/, '')};`).join('\n\n') + '\n');
        return file;
      });
      const args = ['--reporter', 'json', '--pg-version', '15', `--exclude=${EXCLUDED_RULES.join(',')}`, ...(inTx ? ['--assume-in-transaction'] : ['--no-assume-in-transaction']), ...files];
      let out: string;
      try {
        out = execFileSync(SQUAWK, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
      } catch (err) {
        // squawk exits non-zero when it finds something; the report is still on stdout.
        out = (err as { stdout?: string }).stdout ?? '';
        if (!out.trim().startsWith('[')) throw err;
      }
      for (const r of JSON.parse(out || '[]') as { file: string; line: number; line_end: number; rule_name: string; message: string }[]) {
        const migration = path.basename(r.file, '.sql');
        const text = fs.readFileSync(r.file, 'utf8').split('\n').slice(r.line, r.line_end + 1).join('\n');
        findings.push({ migration, rule: r.rule_name, message: r.message, statement: text.trim().slice(0, 300) });
      }
    }
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
  return applyExceptions(findings, opts.exceptions ?? readExceptions());
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const findings = await lintMigrations();
  const refused = findings.filter((f) => !f.excused);
  for (const f of findings) {
    console.log(`${f.excused ? 'excused' : 'REFUSED'}  ${f.migration}  ${f.rule}: ${f.message}\n    ${f.statement.split('\n')[0]}${f.excused ? `\n    reason: ${f.excused}` : ''}`);
  }
  console.log(`${refused.length} refused, ${findings.length - refused.length} excused (migrations/squawk-exceptions.json)`);
  process.exit(refused.length > 0 ? 1 : 0);
}
