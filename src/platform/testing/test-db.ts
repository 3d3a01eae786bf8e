import { execFileSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Kysely, sql } from 'kysely';
import pg from 'pg';
import { openDatabase, type Database, type DatabaseOptions, type DbScope } from '../db/database.ts';
import { createConnectionLock, createPgliteDialect } from '../db/pglite-dialect.ts';
import { listMigrationFiles, migrate } from '../migrate/migrator.ts';

export interface TestDatabase {
  db: Database;
  /** Owner connection string of the throwaway database (Postgres mode only). */
  url?: string;
  kind: 'pglite' | 'postgres';
  drop(): Promise<void>;
}

/** True when the suites should also exercise real Postgres (TEST_DATABASE_URL set). */
export const usingPostgres = Boolean(process.env.TEST_DATABASE_URL);
export const usingRedis = Boolean(process.env.TEST_REDIS_URL);

const ROOT = fileURLToPath(new URL('../../../', import.meta.url));
const CACHE_DIR = path.join(ROOT, 'node_modules', '.cache', 'plinth-test');
/** Bump when the way the PGlite template is built changes, so a stale cache is not reused. */
const PGLITE_RECIPE = 2;
/** Serializes template creation across concurrent test runs on one Postgres server. */
const TEMPLATE_LOCK_KEY = 7_243_002;

/**
 * Identifies the migrated schema by every migration's checksum (plus `extra`): a changed migration gives
 * a new template, never a stale one.
 */
function templateKey(extra = ''): string {
  const hash = createHash('sha256').update(extra);
  for (const f of listMigrationFiles()) hash.update(`${f.name} ${f.checksum}\n`);
  return hash.digest('hex').slice(0, 16);
}

/** A PGlite dump only loads into the same Postgres build, so its version is part of the key. */
function pgliteTemplateKey(): string {
  const pkg = path.join(ROOT, 'node_modules', '@electric-sql', 'pglite', 'package.json');
  return templateKey(`pglite ${JSON.parse(fs.readFileSync(pkg, 'utf8')).version} recipe ${PGLITE_RECIPE}\n`);
}

/**
 * A migrated PGlite data dir as a tarball. Booting PGlite from scratch runs initdb in a second WASM
 * instance and then every migration (about 5 s per file on a busy 2-core machine); loading a dump is
 * a fraction of that. Kept on disk so one run — and the next — migrates once.
 */
async function buildPgliteTemplate(): Promise<Blob> {
  const { PGlite } = await import('@electric-sql/pglite');
  // 1 MB WAL segments instead of 16: the dump holds one segment, and every file untars the dump again.
  const pglite = await PGlite.create({ initDbStartParams: ['--wal-segsize=1'] });
  try {
    const owner = new Kysely<any>({
      dialect: createPgliteDialect({ pglite, lock: createConnectionLock(), session: { currentRole: null }, role: null }),
    });
    await migrate(owner, { kind: 'pglite' });
    // Every test file untars the dump into memory, so it carries only the database PGlite connects to:
    // template0 and template1 are a third of the data dir each, and nothing creates databases in PGlite.
    for (const name of ['template0', 'template1']) {
      await sql`update pg_database set datistemplate = false where datname = ${name}`.execute(owner);
      await sql.raw(`drop database ${name}`).execute(owner);
    }
    await sql`checkpoint`.execute(owner);
    // Uncompressed: gunzip would cost every test file more than reading the larger file does.
    return await pglite.dumpDataDir('none');
  } finally {
    await pglite.close();
  }
}

let templateFile: Promise<string> | undefined;

/** Path of the migrated PGlite template (a tarball of its data dir), built on first use. */
function pgliteTemplateFile(): Promise<string> {
  templateFile ??= (async () => {
    const key = pgliteTemplateKey();
    const file = path.join(CACHE_DIR, `pglite-${key}.tar`);
    if (fs.existsSync(file)) return file;
    const tarball = await buildPgliteTemplate();
    fs.mkdirSync(CACHE_DIR, { recursive: true });
    // Templates of earlier schemas are of no further use.
    for (const old of fs.readdirSync(CACHE_DIR)) {
      if (old.startsWith('pglite-') && !old.startsWith(`pglite-${key}`)) fs.rmSync(path.join(CACHE_DIR, old), { force: true });
    }
    // Written aside and renamed: a parallel test worker never reads half a file.
    const tmp = `${file}.${process.pid}.tmp`;
    fs.writeFileSync(tmp, Buffer.from(await tarball.arrayBuffer()));
    fs.renameSync(tmp, file);
    return file;
  })();
  return templateFile;
}

let templateBlob: Promise<Blob> | undefined;

function loadPgliteTemplate(): Promise<Blob> {
  templateBlob ??= pgliteTemplateFile().then((file) => new Blob([fs.readFileSync(file)]));
  return templateBlob;
}

/**
 * Fills `dir` with a migrated PGlite data dir, for tests that start a real `plinth start` process and
 * are not about its first start: that process then opens the database instead of running initdb and
 * every migration on disk (seconds under tsx). The tarball is a plain data dir, so `tar` unpacks it.
 */
export async function seedPgliteDataDir(dir: string): Promise<void> {
  const file = await pgliteTemplateFile();
  fs.mkdirSync(dir, { recursive: true });
  execFileSync('tar', ['-xf', file, '-C', dir], { stdio: 'pipe' });
}

async function withAdmin<T>(base: string, fn: (admin: pg.Client) => Promise<T>): Promise<T> {
  const admin = new pg.Client({ connectionString: base });
  await admin.connect();
  try {
    return await fn(admin);
  } finally {
    await admin.end();
  }
}

const dbUrl = (base: string, name: string) => {
  const url = new URL(base);
  url.pathname = `/${name}`;
  return url.toString();
};

let postgresTemplate: Promise<string> | undefined;

/**
 * A migrated database that each test file's database is copied from (CREATE DATABASE … TEMPLATE), named by
 * the schema's key. Built under an advisory lock and renamed into place when complete, so concurrent runs
 * (and this run's parallel workers) neither build it twice nor copy a half-migrated one. It is kept for the
 * next run; another branch's schema gets its own.
 */
function loadPostgresTemplate(base: string): Promise<string> {
  postgresTemplate ??= withAdmin(base, async (admin) => {
    const name = `plinth_tpl_${templateKey()}`;
    await admin.query('select pg_advisory_lock($1)', [TEMPLATE_LOCK_KEY]);
    try {
      const found = await admin.query('select 1 from pg_database where datname = $1', [name]);
      if (found.rowCount) return name;
      const building = `${name}_build`;
      await admin.query(`drop database if exists ${building} with (force)`);
      await admin.query(`create database ${building}`);
      const db = await openDatabase({ databaseUrl: dbUrl(base, building) });
      try {
        await migrate(db.owner, { kind: db.kind });
      } finally {
        await db.close();
      }
      await admin.query(`alter database ${building} rename to ${name}`);
      return name;
    } finally {
      await admin.query('select pg_advisory_unlock($1)', [TEMPLATE_LOCK_KEY]);
    }
  });
  return postgresTemplate;
}

/** Builds the migrated template once before the test workers start (vitest globalSetup). */
export async function prepareTestTemplate(): Promise<void> {
  const base = process.env.TEST_DATABASE_URL;
  if (base) await loadPostgresTemplate(base);
  else await loadPgliteTemplate();
}

/**
 * A fresh, migrated database for one test file: a throwaway Postgres database when TEST_DATABASE_URL
 * is set (so parallel files never share rows), otherwise an in-memory PGlite. Both start as a copy of a
 * migrated template; migrate() still runs, and refuses a copy whose history does not match the files.
 */
export async function createTestDatabase(opts: Partial<DatabaseOptions> = {}): Promise<TestDatabase> {
  const base = process.env.TEST_DATABASE_URL;
  if (!base && opts.dataDir) {
    const db = await openDatabase(opts);
    await migrate(db.owner, { kind: db.kind });
    return { db, kind: 'pglite', drop: () => db.close() };
  }
  if (!base) {
    const pglite = await takePglite();
    const db = await openDatabase({ ...opts, pglite });
    await migrate(db.owner, { kind: db.kind });
    return {
      db,
      kind: 'pglite',
      async drop() {
        await db.close();
        await givePglite(pglite);
      },
    };
  }
  const template = await loadPostgresTemplate(base);
  const name = `plinth_test_${Date.now().toString(36)}_${randomBytes(4).toString('hex')}`;
  await withAdmin(base, (admin) => admin.query(`create database ${name} template ${template}`));
  const url = dbUrl(base, name);
  const db = await openDatabase({ ...opts, databaseUrl: url });
  await migrate(db.owner, { kind: db.kind });
  return {
    db,
    url,
    kind: 'postgres',
    async drop() {
      await db.close();
      await withAdmin(base, (admin) => admin.query(`drop database if exists ${name} with (force)`));
    },
  };
}

// --- PGlite instances reused between test files -----------------------------------------------------------
//
// Loading the template into a new PGlite costs ≈ 1.5 s of CPU (the WASM heap, Postgres' file bundle, the
// untar) — most of the embedded suite's CPU, once per test file. A worker runs its files one after the other,
// so an instance a file has dropped is reset to the template's state and handed to the next one: every table
// emptied and the template's own rows put back (triggers off), sequences set back, the session discarded.
// Anything that reset does not cover — a test that created a table or a function, changed a role or a
// setting — shows as a different catalog fingerprint, and that instance is closed instead of reused.

type PGliteInstance = NonNullable<DatabaseOptions['pglite']>;

interface Pristine {
  fingerprint: string;
  tables: string[];
  rows: Array<{ table: string; columns: string; json: string }>;
  sequences: Array<{ name: string; value: string; called: boolean }>;
}

const idle: PGliteInstance[] = [];
let pristine: Promise<Pristine> | undefined;

/** Everything in the catalog a test could change that the data reset would not put back. */
const FINGERPRINT_SQL = `
  select md5(string_agg(x, E'\n' order by x)) as f from (
    select 'c ' || n.nspname || '.' || c.relname || ' ' || c.relkind::text || ' ' || coalesce(array_to_string(c.relacl, ','), '') || ' ' || c.relrowsecurity as x
      from pg_class c join pg_namespace n on n.oid = c.relnamespace
      where n.nspname not in ('pg_catalog', 'information_schema') and n.nspname not like 'pg_toast%' and n.nspname not like 'pg_temp%'
    union all select 'a ' || a.attrelid::regclass || ' ' || a.attname || ' ' || a.atttypid::regtype || ' ' || a.attnotnull
      from pg_attribute a join pg_class c on c.oid = a.attrelid join pg_namespace n on n.oid = c.relnamespace
      where a.attnum > 0 and not a.attisdropped and n.nspname not in ('pg_catalog', 'information_schema') and n.nspname not like 'pg_toast%' and n.nspname not like 'pg_temp%'
    union all select 'p ' || p.oid::regprocedure::text || ' ' || md5(p.prosrc) || ' ' || p.proleakproof from pg_proc p join pg_namespace n on n.oid = p.pronamespace
      where n.nspname not in ('pg_catalog', 'information_schema')
    union all select 't ' || tgrelid::regclass || ' ' || tgname || ' ' || tgenabled::text from pg_trigger where not tgisinternal
    union all select 'r ' || polrelid::regclass || ' ' || polname || ' ' || md5(coalesce(pg_get_expr(polqual, polrelid), '') || coalesce(pg_get_expr(polwithcheck, polrelid), '')) from pg_policy
    union all select 'u ' || rolname || ' ' || rolsuper || ' ' || rolbypassrls || ' ' || rolcanlogin || ' ' || coalesce(array_to_string(rolconfig, ','), '') from pg_roles
    union all select 's ' || setdatabase || ' ' || setrole || ' ' || array_to_string(setconfig, ',') from pg_db_role_setting
    union all select 'n ' || nspname from pg_namespace
  ) s`;

const TABLES_SQL = `
  select format('%I.%I', n.nspname, c.relname) as t
  from pg_class c join pg_namespace n on n.oid = c.relnamespace
  where c.relkind in ('r', 'p') and n.nspname not in ('pg_catalog', 'information_schema') and n.nspname not like 'pg_toast%' and n.nspname not like 'pg_temp%'
  order by 1`;

async function fingerprintOf(pglite: PGliteInstance): Promise<string> {
  return (await pglite.query<{ f: string }>(FINGERPRINT_SQL)).rows[0]!.f;
}

/** The template's catalog fingerprint, its rows and its sequences, read from a fresh instance. */
async function readPristine(pglite: PGliteInstance): Promise<Pristine> {
  const tables = (await pglite.query<{ t: string }>(TABLES_SQL)).rows.map((r) => r.t);
  const rows: Pristine['rows'] = [];
  for (const table of tables) {
    const json = (await pglite.query<{ j: string | null }>(`select json_agg(x)::text as j from ${table} x`)).rows[0]!.j;
    if (!json) continue;
    // Generated columns are computed again on insert; they cannot be written.
    const cols = await pglite.query<{ c: string }>(
      `select format('%I', attname) as c from pg_attribute where attrelid = $1::regclass and attnum > 0 and not attisdropped and attgenerated = '' order by attnum`,
      [table],
    );
    rows.push({ table, columns: cols.rows.map((r) => r.c).join(', '), json });
  }
  const sequences = (
    await pglite.query<{ name: string; value: string | null; called: boolean }>(
      `select format('%I.%I', schemaname, sequencename) as name, coalesce(last_value, start_value)::text as value, last_value is not null as called from pg_sequences`,
    )
  ).rows.map((r) => ({ name: r.name, value: r.value ?? '1', called: r.called }));
  return { fingerprint: await fingerprintOf(pglite), tables, rows, sequences };
}

/** PLINTH_TEST_POOL_STATS=FILE: one line per instance created, reused or discarded (and why), to see the pool work. */
function poolEvent(what: 'created' | 'reused' | 'discarded', why = ''): void {
  if (process.env.PLINTH_TEST_POOL_STATS) fs.appendFileSync(process.env.PLINTH_TEST_POOL_STATS, `${process.pid} ${what} ${why}\n`);
}

async function takePglite(): Promise<PGliteInstance> {
  const reused = idle.pop();
  if (reused) {
    poolEvent('reused');
    return reused;
  }
  poolEvent('created');
  const { PGlite } = await import('@electric-sql/pglite');
  const pglite = await PGlite.create({ loadDataDir: await loadPgliteTemplate() });
  pristine ??= readPristine(pglite);
  await pristine;
  return pglite;
}

/** Puts a dropped instance back in the template's state and keeps it, or closes it when that is not possible. */
async function givePglite(pglite: PGliteInstance): Promise<void> {
  if (pglite.closed) return;
  try {
    const p = await pristine!;
    if (pglite.isInTransaction()) await pglite.exec('rollback');
    await pglite.exec('reset role');
    await pglite.exec('discard all');
    if ((await fingerprintOf(pglite)) !== p.fingerprint || idle.length >= 2) throw new Error('not reusable');
    await pglite.exec(`set session_replication_role = replica; truncate ${p.tables.join(', ')}`);
    for (const r of p.rows) {
      await pglite.query(`insert into ${r.table} (${r.columns}) overriding system value select ${r.columns} from json_populate_recordset(null::${r.table}, $1::json)`, [r.json]);
    }
    for (const q of p.sequences) await pglite.query(`select setval($1::regclass, $2::bigint, $3)`, [q.name, q.value, q.called]);
    await pglite.exec('reset session_replication_role');
    idle.push(pglite);
  } catch (err) {
    poolEvent('discarded', (err as Error).message);
    await pglite.close().catch(() => undefined);
  }
}

/**
 * Closes the pooled idle instances. A script (not a test worker, which is simply ended) calls it before it
 * exits: an open PGlite instance re-arms Postgres' own interval timer and keeps Node's event loop alive.
 */
export async function closeIdleTestDatabases(): Promise<void> {
  await Promise.all(idle.splice(0).map((p) => p.close().catch(() => undefined)));
}

/** Tests create tables of their own that the generated schema does not know; they query those untyped. */
export function testTables(db: Database): DbScope<any> {
  return db as unknown as DbScope<any>;
}
