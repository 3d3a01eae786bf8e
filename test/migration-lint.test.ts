import path from 'node:path';
import pg from 'pg';
import { beforeAll, describe, expect, it } from 'vitest';
import { applyExceptions, lintMigrations, type Finding } from '../scripts/lint-migrations.ts';
import { openDatabase } from '../src/platform/db/database.ts';
import { usingPostgres } from '../src/platform/testing/test-db.ts';
import { migrate } from '../src/platform/migrate/migrator.ts';

const FIXTURES = path.resolve(import.meta.dirname, 'fixtures/migrations-lint');

describe('migration safety lint (squawk on the SQL each migration emits)', () => {
  let findings: Finding[];
  beforeAll(async () => {
    findings = await lintMigrations({ dir: FIXTURES, exceptions: {} });
  });

  it('refuses blocking DDL on an existing table, not on a table created in the same migration', () => {
    expect(findings.map((f) => `${f.migration} ${f.rule}`).sort()).toEqual([
      '0002_fixture_blocking changing-column-type',
      '0002_fixture_blocking require-concurrent-index-creation',
    ]);
    expect(findings.every((f) => !f.excused)).toBe(true);
    expect(findings.find((f) => f.rule === 'require-concurrent-index-creation')?.statement).toContain('lint_things_size');
  });

  it('a reviewed exception excuses exactly the rule it names', () => {
    const excused = applyExceptions(findings, { '0002_fixture_blocking': { 'changing-column-type': 'table is empty in every environment (reviewed)' } });
    expect(excused.filter((f) => !f.excused).map((f) => f.rule)).toEqual(['require-concurrent-index-creation']);
  });
});

describe.skipIf(!usingPostgres)('migrations give up on a held lock instead of queueing traffic behind them', () => {
  it('fails after the lock timeout while another transaction holds the table, and applies once it is released', async () => {
    const base = process.env.TEST_DATABASE_URL!;
    const name = `plinth_lint_${Date.now().toString(36)}`;
    const admin = new pg.Client({ connectionString: base });
    await admin.connect();
    await admin.query(`create database ${name}`);
    const url = new URL(base);
    url.pathname = `/${name}`;
    const db = await openDatabase({ databaseUrl: url.toString() });
    const holder = new pg.Client({ connectionString: url.toString() });
    await holder.connect();
    try {
      await migrate(db.owner, { kind: db.kind }, { dir: FIXTURES });
      await holder.query('begin');
      await holder.query('lock table lint_things in access share mode');
      const started = Date.now();
      const err = await migrate(db.owner, { kind: db.kind }, { dir: `${FIXTURES}-next`, lockTimeoutMs: 200 }).catch((e: unknown) => e);
      expect(String((err as Error)?.message)).toMatch(/lock timeout/);
      expect(Date.now() - started).toBeLessThan(5_000);
      await holder.query('rollback');
      const res = await migrate(db.owner, { kind: db.kind }, { dir: `${FIXTURES}-next`, lockTimeoutMs: 200 });
      expect(res.applied).toEqual(['0003_fixture_add_column']);
    } finally {
      await holder.end();
      await db.close();
      await admin.query(`drop database if exists ${name} with (force)`);
      await admin.end();
    }
  });
});
