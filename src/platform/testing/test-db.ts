import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { openDatabase, type Database, type DatabaseOptions, type DbScope } from '../db/database.ts';
import { migrate } from '../migrate/migrator.ts';

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

/**
 * A fresh, migrated database for one test file: a throwaway Postgres database when TEST_DATABASE_URL
 * is set (so parallel files never share rows), otherwise an in-memory PGlite.
 */
export async function createTestDatabase(opts: Partial<DatabaseOptions> = {}): Promise<TestDatabase> {
  const base = process.env.TEST_DATABASE_URL;
  if (!base) {
    const db = await openDatabase({ ...opts });
    await migrate(db.owner, { kind: db.kind });
    return { db, kind: 'pglite', drop: () => db.close() };
  }
  const name = `plinth_test_${Date.now().toString(36)}_${randomBytes(4).toString('hex')}`;
  const admin = new pg.Client({ connectionString: base });
  await admin.connect();
  try {
    await admin.query(`create database ${name}`);
  } finally {
    await admin.end();
  }
  const url = new URL(base);
  url.pathname = `/${name}`;
  const db = await openDatabase({ ...opts, databaseUrl: url.toString() });
  await migrate(db.owner, { kind: db.kind });
  return {
    db,
    url: url.toString(),
    kind: 'postgres',
    async drop() {
      await db.close();
      const c = new pg.Client({ connectionString: base });
      await c.connect();
      try {
        await c.query(`drop database if exists ${name} with (force)`);
      } finally {
        await c.end();
      }
    },
  };
}

/** Tests create tables of their own that the generated schema does not know; they query those untyped. */
export function testTables(db: Database): DbScope<any> {
  return db as unknown as DbScope<any>;
}
