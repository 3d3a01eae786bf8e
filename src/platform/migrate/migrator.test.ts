import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestDatabase, type TestDatabase } from '../testing/test-db.ts';
import { CHECKSUMS_FILE, listMigrationFiles, migrate, MigrationError, MIGRATIONS_DIR } from './migrator.ts';

describe('migrator', () => {
  let t: TestDatabase;
  let dir: string;

  beforeAll(async () => {
    t = await createTestDatabase();
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'plinth-mig-'));
    for (const f of fs.readdirSync(MIGRATIONS_DIR)) fs.copyFileSync(path.join(MIGRATIONS_DIR, f), path.join(dir, f));
  });
  afterAll(async () => {
    await t?.drop();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('records every migration with a checksum and is a no-op the second time', async () => {
    const { rows } = await sql<{ name: string; checksum: string }>`select name, checksum from plinth_migrations order by name`.execute(t.db.owner);
    expect(rows.map((r) => r.name)).toEqual(listMigrationFiles().map((f) => f.name));
    const again = await migrate(t.db.owner, { kind: t.db.kind }, { dir });
    expect(again.applied).toEqual([]);
  });

  it('applies a new migration in order, and rolls back a failing one entirely', async () => {
    fs.writeFileSync(
      path.join(dir, '9000_test_widgets.ts'),
      `import { sql } from 'kysely';\nexport async function up(db) { await sql\`create table test_widgets (id int primary key)\`.execute(db); }\n`,
    );
    expect((await migrate(t.db.owner, { kind: t.db.kind }, { dir })).applied).toEqual(['9000_test_widgets']);
    fs.writeFileSync(
      path.join(dir, '9001_test_broken.ts'),
      `import { sql } from 'kysely';\nexport async function up(db) { await sql\`create table test_half (id int)\`.execute(db); await sql\`select nope\`.execute(db); }\n`,
    );
    await expect(migrate(t.db.owner, { kind: t.db.kind }, { dir })).rejects.toThrow();
    const half = await sql<{ n: number }>`select count(*)::int as n from pg_tables where tablename = 'test_half'`.execute(t.db.owner);
    expect(half.rows[0]!.n).toBe(0);
    fs.rmSync(path.join(dir, '9001_test_broken.ts'));
  });

  it('refuses to start when an applied migration file changed', async () => {
    const file = path.join(dir, '9000_test_widgets.ts');
    fs.appendFileSync(file, '// edited after it was applied\n');
    const err = await migrate(t.db.owner, { kind: t.db.kind }, { dir }).catch((e) => e);
    expect(err).toBeInstanceOf(MigrationError);
    expect(err.message).toMatch(/9000_test_widgets changed after it was applied/);
  });

  it('refuses to start when an applied migration file is missing', async () => {
    fs.rmSync(path.join(dir, '9000_test_widgets.ts'));
    await expect(migrate(t.db.owner, { kind: t.db.kind }, { dir })).rejects.toThrow(/9000_test_widgets was applied .* missing/);
  });
});

describe('checkMigrations (processes started with MIGRATE_ON_START=false)', () => {
  it('passes on an up-to-date schema and refuses a pending migration', async () => {
    const { checkMigrations } = await import('./migrator.ts');
    const t = await createTestDatabase();
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'plinth-chk-'));
    try {
      for (const f of fs.readdirSync(MIGRATIONS_DIR)) fs.copyFileSync(path.join(MIGRATIONS_DIR, f), path.join(dir, f));
      await expect(checkMigrations(t.db.owner, { dir })).resolves.toEqual({ newer: [] });
      fs.writeFileSync(path.join(dir, '9500_test_pending.ts'), 'export async function up() {}\n');
      await expect(checkMigrations(t.db.owner, { dir })).rejects.toThrow(/Pending migrations 9500_test_pending/);
    } finally {
      await t.drop();
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('rollback: an older release on a schema a newer release migrated', () => {
  it('starts beside applied expand migrations it does not know, and refuses unknown contract ones', async () => {
    const { checkMigrations } = await import('./migrator.ts');
    const t = await createTestDatabase();
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'plinth-rb-'));
    try {
      for (const f of fs.readdirSync(MIGRATIONS_DIR)) fs.copyFileSync(path.join(MIGRATIONS_DIR, f), path.join(dir, f));
      // The newer release adds a table (expand) and runs its migrations.
      const expand = path.join(dir, '9600_test_expand.ts');
      fs.writeFileSync(expand, "import { sql } from 'kysely';\nexport const phase = 'expand';\nexport async function up(db) { await sql`create table test_rb (id int)`.execute(db); }\n");
      await migrate(t.db.owner, { kind: t.db.kind }, { dir });
      // Rolled back: the older release's files lack 9600; it starts, and reports what it runs beside.
      fs.rmSync(expand);
      await expect(checkMigrations(t.db.owner, { dir })).resolves.toEqual({ newer: ['9600_test_expand'] });
      expect((await migrate(t.db.owner, { kind: t.db.kind }, { dir })).newer).toEqual(['9600_test_expand']);
      // A migration not marked expand (dropping or changing what old code uses) still stops the old release.
      const contract = path.join(dir, '9601_test_contract.ts');
      fs.writeFileSync(contract, "import { sql } from 'kysely';\nexport async function up(db) { await sql`drop table test_rb`.execute(db); }\n");
      await migrate(t.db.owner, { kind: t.db.kind }, { dir });
      fs.rmSync(contract);
      await expect(checkMigrations(t.db.owner, { dir })).rejects.toThrow(/9601_test_contract was applied .* not an expand step/);
    } finally {
      await t.drop();
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('reads a history table created before the phase column existed', async () => {
    const { checkMigrations } = await import('./migrator.ts');
    const t = await createTestDatabase();
    try {
      await sql`alter table plinth_migrations drop column phase`.execute(t.db.owner);
      await expect(checkMigrations(t.db.owner)).resolves.toEqual({ newer: [] });
    } finally {
      await t.drop();
    }
  });
});

describe('compiled migrations (dist/migrations)', () => {
  it('take their checksums from checksums.json, so a database migrated from source matches', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'plinth-dist-'));
    try {
      const source = listMigrationFiles();
      for (const f of source) fs.writeFileSync(path.join(dir, `${f.name}.js`), 'export async function up() {}\n');
      fs.writeFileSync(path.join(dir, CHECKSUMS_FILE), JSON.stringify(Object.fromEntries(source.map((f) => [f.name, f.checksum]))));
      expect(listMigrationFiles(dir).map(({ name, checksum }) => ({ name, checksum }))).toEqual(source.map(({ name, checksum }) => ({ name, checksum })));
      fs.writeFileSync(path.join(dir, '9999_test_unlisted.js'), 'export async function up() {}\n');
      expect(() => listMigrationFiles(dir)).toThrow(/9999_test_unlisted is not listed/);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
