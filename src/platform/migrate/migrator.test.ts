import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestDatabase, type TestDatabase } from '../testing/test-db.ts';
import { listMigrationFiles, migrate, MigrationError, MIGRATIONS_DIR } from './migrator.ts';

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
      await expect(checkMigrations(t.db.owner, { dir })).resolves.toBeUndefined();
      fs.writeFileSync(path.join(dir, '9500_test_pending.ts'), 'export async function up() {}\n');
      await expect(checkMigrations(t.db.owner, { dir })).rejects.toThrow(/Pending migrations 9500_test_pending/);
    } finally {
      await t.drop();
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
