import fs from 'node:fs';
import { Kysely, PostgresDialect, sql, type LogEvent, type Transaction } from 'kysely';
import pg from 'pg';
import { isUuid } from '../ids.ts';
import { createConnectionLock, createPgliteDialect } from './pglite-dialect.ts';

/** The role the application runs as: not the owner of any table, no BYPASSRLS. Created by migration 0001. */
export const APP_ROLE = 'plinth_app';

// int8 (counts, sequence numbers) as JS numbers in both adapters; values stay far below 2^53.
pg.types.setTypeParser(20, (v) => Number(v));

export interface QueryObserver {
  (event: { sql: string; durationMs: number; error?: unknown }): void;
}

export interface PoolStats {
  total: number;
  idle: number;
  waiting: number;
}

export interface Database {
  readonly kind: 'pglite' | 'postgres';
  /** App role, no tenant context: for global tables (users, sessions, outbox). Tenant tables show 0 rows. */
  readonly app: Kysely<any>;
  /** Owner role: migrations and operator tools only (audit verification, seeding). Bypasses nothing by
   * accident: tenant tables FORCE RLS, so even the owner needs a tenant context or a policy that allows it. */
  readonly owner: Kysely<any>;
  /** Runs fn in one transaction whose tenant context is tenantId; RLS limits every query to that tenant. */
  withTenant<T, DB = any>(tenantId: string, fn: (trx: Transaction<DB>) => Promise<T>): Promise<T>;
  /** Like withTenant, on a read replica when configured (eventually consistent reads). */
  withTenantRead<T, DB = any>(tenantId: string, fn: (trx: Transaction<DB>) => Promise<T>): Promise<T>;
  ping(): Promise<void>;
  poolStats(): PoolStats;
  close(): Promise<void>;
}

export interface DatabaseOptions {
  databaseUrl?: string;
  databaseAppUrl?: string;
  replicaUrls?: string[];
  poolMax?: number;
  /** PGlite data directory; undefined = in memory. */
  dataDir?: string;
  /** PGlite only: start from this dumped data dir (`dumpDataDir()`) instead of an empty cluster. Tests
   * load a migrated template this way, which is several times faster than initdb plus migrations. */
  loadDataDir?: Blob;
  /** Fail fast when Postgres is unreachable instead of queueing requests behind a dead pool. */
  connectTimeoutMs?: number;
  statementTimeoutMs?: number;
  onQuery?: QueryObserver;
}

export async function setTenant(trx: Transaction<any>, tenantId: string): Promise<void> {
  await sql`select set_config('app.tenant_id', ${tenantId}, true)`.execute(trx);
}

function kyselyLog(onQuery?: QueryObserver) {
  if (!onQuery) return undefined;
  return (event: LogEvent) => {
    onQuery({
      sql: event.query.sql,
      durationMs: event.queryDurationMillis,
      error: event.level === 'error' ? event.error : undefined,
    });
  };
}

function tenantRunner(db: Kysely<any>) {
  return <T, DB>(tenantId: string, fn: (trx: Transaction<DB>) => Promise<T>): Promise<T> =>
    db.transaction().execute(async (trx) => {
      await setTenant(trx, tenantId);
      return fn(trx as unknown as Transaction<DB>);
    });
}

/**
 * The pg flavour of tenantRunner, one round trip shorter per transaction: BEGIN and the tenant context go
 * to the server as one simple-protocol query. That needs the id inline, so it must be a well-formed UUID
 * (checked here; anything else is refused before reaching SQL). Nested transactions are not supported
 * inside fn (none are used).
 */
function pgTenantRunner(db: Kysely<any>) {
  return <T, DB>(tenantId: string, fn: (trx: Transaction<DB>) => Promise<T>): Promise<T> => {
    if (!isUuid(tenantId)) return Promise.reject(new Error('tenant id must be a UUID'));
    return db.connection().execute(async (conn) => {
      await sql.raw(`begin; select set_config('app.tenant_id', '${tenantId.toLowerCase()}', true)`).execute(conn);
      let result: T;
      try {
        result = await fn(conn as unknown as Transaction<DB>);
      } catch (err) {
        await sql.raw('rollback').execute(conn).catch(() => undefined);
        throw err;
      }
      await sql.raw('commit').execute(conn);
      return result;
    });
  };
}

export async function openDatabase(opts: DatabaseOptions): Promise<Database> {
  return opts.databaseUrl ? openPostgres(opts as DatabaseOptions & { databaseUrl: string }) : openPglite(opts);
}

async function openPglite(opts: DatabaseOptions): Promise<Database> {
  if (opts.dataDir) fs.mkdirSync(opts.dataDir, { recursive: true });
  // Loaded only in the embedded mode: production processes never carry the WASM Postgres in memory.
  const { PGlite } = await import('@electric-sql/pglite');
  const pglite = await PGlite.create({
    ...(opts.dataDir ? { dataDir: opts.dataDir } : {}),
    ...(opts.loadDataDir ? { loadDataDir: opts.loadDataDir } : {}),
  });
  const lock = createConnectionLock();
  const session = { currentRole: null as string | null };
  const log = kyselyLog(opts.onQuery);
  const owner = new Kysely<any>({ dialect: createPgliteDialect({ pglite, lock, session, role: null }), log });
  const app = new Kysely<any>({ dialect: createPgliteDialect({ pglite, lock, session, role: APP_ROLE }), log });
  const withTenant = tenantRunner(app);
  let closed = false;
  return {
    kind: 'pglite',
    app,
    owner,
    withTenant,
    withTenantRead: withTenant,
    async ping() {
      if (closed) throw new Error('database closed');
      await sql`select 1`.execute(app);
    },
    poolStats: () => ({ total: 1, idle: 1, waiting: 0 }),
    async close() {
      if (closed) return;
      closed = true;
      // Wait for queued transactions, then close; PGlite flushes its data dir on close.
      const release = await lock.acquire();
      try {
        await pglite.close();
      } finally {
        release();
      }
    },
  };
}

function createPool(connectionString: string, opts: DatabaseOptions, setRole: boolean): pg.Pool {
  const gucs = [`-c statement_timeout=${opts.statementTimeoutMs ?? 30_000}`];
  // Without a dedicated app login we connect as the owner and drop to the app role at session start,
  // so RLS applies to every statement. With PgBouncer use DATABASE_APP_URL instead (no startup options).
  if (setRole) gucs.push(`-c role=${APP_ROLE}`);
  const pool = new pg.Pool({
    connectionString,
    max: opts.poolMax ?? 10,
    connectionTimeoutMillis: opts.connectTimeoutMs ?? 3_000,
    idleTimeoutMillis: 30_000,
    options: gucs.join(' '),
  });
  guardClients(pool);
  return pool;
}

/**
 * A client that loses its server (restart, failover) must not crash the process: idle clients report
 * through the pool's 'error', but a client checked out by a transaction and between statements emits
 * 'error' on itself, which without a listener is an uncaught exception. Its next query fails instead,
 * and the pool discards it on release.
 */
function guardClients(pool: pg.Pool): void {
  pool.on('error', () => {});
  pool.on('connect', (client) => client.on('error', () => {}));
}

async function openPostgres(opts: DatabaseOptions & { databaseUrl: string }): Promise<Database> {
  const log = kyselyLog(opts.onQuery);
  const appPool = opts.databaseAppUrl
    ? createPool(opts.databaseAppUrl, opts, false)
    : createPool(opts.databaseUrl, opts, true);
  const ownerPool = new pg.Pool({ connectionString: opts.databaseUrl, max: 2, connectionTimeoutMillis: 5_000 });
  guardClients(ownerPool);
  const replicaPools = (opts.replicaUrls ?? []).map((u) => createPool(u, opts, !opts.databaseAppUrl));

  const app = new Kysely<any>({ dialect: new PostgresDialect({ pool: appPool }), log });
  const owner = new Kysely<any>({ dialect: new PostgresDialect({ pool: ownerPool }), log });
  const replicas = replicaPools.map((pool) => new Kysely<any>({ dialect: new PostgresDialect({ pool }), log }));
  const withTenant = pgTenantRunner(app);
  const replicaRunners = replicas.map(pgTenantRunner);
  let next = 0;

  return {
    kind: 'postgres',
    app,
    owner,
    withTenant,
    withTenantRead(tenantId, fn) {
      if (replicaRunners.length === 0) return withTenant(tenantId, fn);
      const runner = replicaRunners[next++ % replicaRunners.length]!;
      return runner(tenantId, fn);
    },
    async ping() {
      await sql`select 1`.execute(app);
    },
    poolStats: () => ({ total: appPool.totalCount, idle: appPool.idleCount, waiting: appPool.waitingCount }),
    async close() {
      await Promise.all([app.destroy(), owner.destroy(), ...replicas.map((r) => r.destroy())]);
    },
  };
}
