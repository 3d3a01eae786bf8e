import fs from 'node:fs';
import { Kysely, PostgresDialect, sql, type CompiledQuery, type LogEvent, type QueryExecutorProvider, type Transaction } from 'kysely';
import pg from 'pg';
import { isUuid } from '../ids.ts';
import { CopyOutCursor } from './copy-out.ts';
import { createConnectionLock, createPgliteDialect } from './pglite-dialect.ts';
import { currentReadSession, currentWriter, type LsnStore } from './read-session.ts';
import { createReplicaRouter, ReplicaBehindError, type ReplicaMetrics, type ReplicaState } from './replica-router.ts';
import { isDatabaseUnavailable } from './unavailable.ts';
import type { DB } from './schema.generated.ts';
import { createCostMeter, meteredTenantRunner, type CostMeter } from '../observability/tenant-cost-meter.ts';
import { createUnitOfWork, currentUnitOfWork, type UnitOfWork } from './unit-of-work.ts';

export type { DB } from './schema.generated.ts';
export type { ReplicaState } from './replica-router.ts';

/** Options of a read transaction. */
export interface ReadOptions {
  /** READ ONLY transaction (reporting, exports): a stray write fails instead of reaching the primary. */
  readOnly?: boolean;
  /** This transaction's statement_timeout instead of the default. */
  statementTimeoutMs?: number;
  /**
   * No parallel query (max_parallel_workers_per_gather = 0, transaction-local): a batch read (an export, its
   * count) runs on its one backend, so it never takes more than one process's share of the database's CPU
   * beside the interactive traffic. PGlite has no parallel workers anyway.
   */
  serial?: boolean;
}

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

/**
 * A transaction as seen by code that does not own the tables it touches: it can be passed on (to
 * `audit.record`, `events.add`) and joined with `scope.join`, but not queried directly.
 */
export type TxHandle = QueryExecutorProvider & { readonly isTransaction: boolean };

/** What one module's repo sees of the database: only the tables it owns (`Pick<DB, …>`), fully typed. */
export interface DbScope<T> {
  /** App role, no tenant context: for global tables (users, sessions). Tenant tables show 0 rows. */
  readonly app: Kysely<T>;
  /** Runs fn in one transaction whose tenant context is tenantId; RLS limits every query to that tenant. */
  withTenant<R>(tenantId: string, fn: (trx: Transaction<T>) => Promise<R>): Promise<R>;
  /**
   * Like withTenant, on a read replica when one is in rotation (lag under DATABASE_REPLICA_MAX_LAG_MS) and,
   * within a request, has replayed the principal's last write (read-your-writes); otherwise the primary.
   */
  withTenantRead<R>(tenantId: string, fn: (trx: Transaction<T>) => Promise<R>, opts?: ReadOptions): Promise<R>;
  /**
   * One statement in a transaction of its own with NO tenant context, returning its rows, in one round trip:
   * for a SECURITY INVOKER function that sets each org's context itself (a write shared by several orgs'
   * requests, e.g. `billing_usage_ingest`). Never part of a unit of work. `opts.writers`: the principals whose
   * read-your-writes position the write moves (`currentWriter()` of each request it serves; default: the
   * current request's); `opts.costs`: each org's share of the statement's time in the cost meter (weights).
   */
  withStatement<R>(query: CompiledQuery<R>, opts?: StatementOptions): Promise<R[]>;
  /** The caller's transaction, typed with this scope's tables (for writes that must commit together). */
  join(trx: TxHandle): Transaction<T>;
  /** Owner role: migrations and operator tools only (audit verification, seeding, flag definitions). Bypasses
   * nothing by accident: tenant tables FORCE RLS, so even the owner needs a tenant context or a policy. */
  readonly owner: Kysely<T>;
}

export interface StatementOptions {
  writers?: Array<string | undefined>;
  costs?: Map<string, number>;
}

/** Runs a shared statement and spreads its time over the orgs it served, by weight. */
async function meteredShares<R>(meter: CostMeter, weights: Map<string, number> | undefined, run: () => Promise<R>): Promise<R> {
  const started = performance.now();
  try {
    return await run();
  } finally {
    const ms = performance.now() - started;
    let total = 0;
    for (const w of weights?.values() ?? []) total += w;
    if (total > 0) for (const [tenantId, w] of weights!) meter.db(tenantId, (ms * w) / total);
  }
}

export interface Database extends DbScope<DB> {
  readonly kind: 'pglite' | 'postgres';
  /** A module's view: the same connections, typed with only the tables it names. */
  scope<K extends keyof DB>(...tables: K[]): DbScope<Pick<DB, K>>;
  /**
   * LISTEN on a channel over a dedicated connection (Postgres only; undefined embedded, where one process
   * does everything and nudges itself). Reconnects with backoff after the connection is lost, and calls
   * onNotify after every (re)connect too, since notifications sent meanwhile are lost. Returns a stop function.
   */
  listen?(channel: string, onNotify: () => void): () => Promise<void>;
  /** A request-wide transaction that every later `withTenant` of the request joins (see unit-of-work.ts). */
  openUnitOfWork(onBegin: (trx: Transaction<DB>) => Promise<void>): UnitOfWork;
  /** Per-org sums of requests, tenant-transaction time and jobs, flushed by tenant-costs.ts. */
  readonly costs: CostMeter;
  ping(): Promise<void>;
  poolStats(): PoolStats;
  /** Replica routing state (empty without replicas); `checkReplicas` measures now instead of at the next tick. */
  replicas(): ReplicaState[];
  checkReplicas(): Promise<void>;
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
  /**
   * Tests only: run on this open PGlite instead of creating one. close() then leaves it open for its owner,
   * which resets and reuses it (src/platform/testing/test-db.ts); this Database refuses queries after close().
   */
  pglite?: import('@electric-sql/pglite').PGlite;
  /** Fail fast when Postgres is unreachable instead of queueing requests behind a dead pool. */
  connectTimeoutMs?: number;
  /** Per statement in tenant transactions (SET LOCAL, so it survives PgBouncer transaction pooling). */
  statementTimeoutMs?: number;
  onQuery?: QueryObserver;
  /** Replicas lagging beyond this leave read rotation (default 5000). */
  replicaMaxLagMs?: number;
  /** Replica lag check cadence (default 1000). */
  replicaCheckEveryMs?: number;
  /** Read-your-writes: each principal's last write position (Redis when present). Without it, a request's
   * own writes still send its later reads to the primary, but the next request may read a lagging replica. */
  lsnStore?: LsnStore;
  /** Replica lag, reads per target, fallbacks (observability/metrics.ts `replicaRoutingMetrics`). */
  replicaMetrics?: ReplicaMetrics;
}

const DEFAULT_STATEMENT_TIMEOUT_MS = 30_000;
/** A transaction left open (a stuck request) stops holding locks and a pooled server connection after this. */
const IDLE_IN_TRANSACTION_TIMEOUT_MS = 60_000;

/**
 * Transaction-local limits, sent in the same round trip as BEGIN: behind PgBouncer (transaction pooling)
 * startup parameters are refused and session SETs would leak to other clients, but SET LOCAL ends with
 * the transaction.
 */
function transactionLimits(statementTimeoutMs: number, serial = false): string {
  return (
    `set_config('statement_timeout', '${Math.trunc(statementTimeoutMs)}', true), ` +
    `set_config('idle_in_transaction_session_timeout', '${IDLE_IN_TRANSACTION_TIMEOUT_MS}', true)` +
    (serial ? `, set_config('max_parallel_workers_per_gather', '0', true)` : '')
  );
}

export async function setTenant(trx: TxHandle, tenantId: string): Promise<void> {
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

type TenantRunner = <R>(tenantId: string, fn: (trx: Transaction<DB>) => Promise<R>) => Promise<R>;

function tenantRunner(db: Kysely<DB>): TenantRunner {
  return (tenantId, fn) =>
    currentUnitOfWork()?.run(tenantId, fn) ??
    db.transaction().execute(async (trx) => {
      await setTenant(trx, tenantId);
      return fn(trx);
    });
}

/**
 * The pg flavour of tenantRunner, one round trip shorter per transaction: BEGIN and the tenant context go
 * to the server as one simple-protocol query. That needs the id inline, so it must be a well-formed UUID
 * (checked here; anything else is refused before reaching SQL). Nested transactions are not supported
 * inside fn (none are used).
 */
interface RunOptions extends ReadOptions {
  /** Replica reads for read-your-writes: fail with ReplicaBehindError unless replayed past this position. */
  requireLsn?: bigint;
  /** Runs on the same connection right after COMMIT (recording the write's WAL position). */
  afterCommit?: (conn: Kysely<DB>) => Promise<void>;
  /** Never join the request's unit of work (replica reads are not part of the primary's transaction). */
  standalone?: boolean;
}

/**
 * A transaction's tenant context and limits as one SELECT, the id inline so it travels in the same
 * simple-protocol query as BEGIN or the statement it guards. Callers check the id is a UUID first.
 */
function tenantContextSql(tenantId: string, limits: string): string {
  return `select set_config('app.tenant_id', '${tenantId.toLowerCase()}', true), ${limits}`;
}

type PgRunner = <R>(tenantId: string, fn: (trx: Transaction<DB>) => Promise<R>, o?: RunOptions) => Promise<R>;

function pgTenantRunner(db: Kysely<DB>, statementTimeoutMs: number): PgRunner {
  const limits = transactionLimits(statementTimeoutMs);
  return <R>(tenantId: string, fn: (trx: Transaction<DB>) => Promise<R>, o: RunOptions = {}): Promise<R> => {
    if (!isUuid(tenantId)) return Promise.reject(new Error('tenant id must be a UUID'));
    const uow = o.standalone ? undefined : currentUnitOfWork();
    if (uow) return uow.run(tenantId, fn);
    const lim = o.statementTimeoutMs === undefined && !o.serial ? limits : transactionLimits(o.statementTimeoutMs ?? statementTimeoutMs, o.serial);
    return db.connection().execute(async (conn) => {
      await sql.raw(`begin${o.readOnly ? ' read only' : ''}; ${tenantContextSql(tenantId, lim)}`).execute(conn);
      let result: R;
      try {
        if (o.requireLsn !== undefined) {
          const { rows } = await sql<{ ok: boolean | null }>`select (pg_last_wal_replay_lsn() - '0/0'::pg_lsn) >= ${o.requireLsn.toString()}::numeric as ok`.execute(conn);
          if (!rows[0]?.ok) throw new ReplicaBehindError('replica has not replayed the principal\'s last write');
        }
        // The connection runs inside the BEGIN above; Kysely types it as a plain connection.
        result = await fn(conn as unknown as Transaction<DB>);
      } catch (err) {
        await sql.raw('rollback').execute(conn).catch(() => undefined);
        throw err;
      }
      await sql.raw('commit').execute(conn);
      if (o.afterCommit) await o.afterCommit(conn).catch(() => undefined);
      return result;
    });
  };
}

/**
 * Adds the typed views. A scope is the same object narrowed in type only: the tables a module may touch
 * are a compile-time promise (a wrong table or column fails `npm run typecheck`), RLS is the runtime one.
 */
function withScopes(
  base: Omit<Database, 'scope' | 'join' | 'openUnitOfWork'>,
  beginLimits?: string,
  afterUnitOfWork?: () => Promise<void>,
): Database {
  const db: Database = {
    ...base,
    join: (trx) => trx as Transaction<DB>,
    // On pg the same transaction-local limits as every other transaction, sent with BEGIN.
    openUnitOfWork: (onBegin) => {
      const uow = createUnitOfWork(base.app, onBegin, beginLimits ? { begin: `begin; select ${beginLimits}`, multiStatement: true } : {});
      if (!afterUnitOfWork) return uow;
      // Read-your-writes: a committed unit of work moves the principal's position like any other write.
      return Object.assign(Object.create(uow) as UnitOfWork, {
        async commit(last?: CompiledQuery) {
          const opened = uow.opened;
          await uow.commit(last);
          if (opened) await afterUnitOfWork().catch(() => undefined);
        },
      });
    },
    scope: <K extends keyof DB>() => db as unknown as DbScope<Pick<DB, K>>,
  };
  return db;
}

export async function openDatabase(opts: DatabaseOptions): Promise<Database> {
  return opts.databaseUrl ? openPostgres(opts as DatabaseOptions & { databaseUrl: string }) : openPglite(opts);
}

async function openPglite(opts: DatabaseOptions): Promise<Database> {
  if (opts.dataDir) fs.mkdirSync(opts.dataDir, { recursive: true });
  // Loaded only in the embedded mode: production processes never carry the WASM Postgres in memory.
  const shared = opts.pglite;
  const pglite = shared ?? (await (await import('@electric-sql/pglite')).PGlite.create({
    ...(opts.dataDir ? { dataDir: opts.dataDir } : {}),
    ...(opts.loadDataDir ? { loadDataDir: opts.loadDataDir } : {}),
  }));
  // After close(), nothing of this Database reaches the instance (a shared one serves its next user then).
  let revoked = false;
  const gone = () => Promise.reject(new Error('database closed'));
  const handle = {
    query: ((q: string, p?: unknown[]) => (revoked ? gone() : pglite.query(q, p))) as typeof pglite.query,
    exec: ((q: string) => (revoked ? gone() : pglite.exec(q))) as typeof pglite.exec,
  };
  const lock = createConnectionLock();
  const session = { currentRole: null as string | null };
  const log = kyselyLog(opts.onQuery);
  const owner = new Kysely<DB>({ dialect: createPgliteDialect({ pglite: handle, lock, session, role: null }), log });
  const app = new Kysely<DB>({ dialect: createPgliteDialect({ pglite: handle, lock, session, role: APP_ROLE }), log });
  const costs = createCostMeter();
  const withTenant = meteredTenantRunner(tenantRunner(app), costs);
  let closed = false;
  return withScopes({
    kind: 'pglite',
    app,
    owner,
    costs,
    withTenant,
    withStatement: (query, so) => meteredShares(costs, so?.costs, async () => (await app.executeQuery(query)).rows),
    withTenantRead(tenantId, fn, ro) {
      if (!ro?.readOnly && ro?.statementTimeoutMs === undefined) return withTenant(tenantId, fn);
      return app.transaction().execute(async (trx) => {
        if (ro.readOnly) await sql`set transaction read only`.execute(trx);
        await setTenant(trx, tenantId);
        if (ro.statementTimeoutMs !== undefined) await sql`select set_config('statement_timeout', ${String(Math.trunc(ro.statementTimeoutMs))}, true)`.execute(trx);
        return fn(trx);
      });
    },
    replicas: () => [],
    checkReplicas: async () => undefined,
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
      revoked = true;
      try {
        if (!shared) await pglite.close();
      } finally {
        release();
      }
    },
  });
}

function createPool(connectionString: string, opts: DatabaseOptions, setRole: boolean): pg.Pool {
  // Without a dedicated app login we connect as the owner and drop to the app role at session start, so RLS
  // applies to every statement. That needs startup options, which PgBouncer refuses: with DATABASE_APP_URL
  // none are sent, and the role's own defaults (APP_ROLE_DEFAULTS, set by migrate) bound statements outside tenant transactions.
  const options = setRole
    ? `-c role=${APP_ROLE} -c statement_timeout=${opts.statementTimeoutMs ?? DEFAULT_STATEMENT_TIMEOUT_MS}`
    : undefined;
  const pool = new pg.Pool({
    connectionString,
    max: opts.poolMax ?? 10,
    connectionTimeoutMillis: opts.connectTimeoutMs ?? 3_000,
    idleTimeoutMillis: 30_000,
    options,
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

  // The cursor slot runs COPY … TO STDOUT (copy-out.ts: exports), on the primary and the replicas.
  const app = new Kysely<DB>({ dialect: new PostgresDialect({ pool: appPool, cursor: CopyOutCursor }), log });
  const owner = new Kysely<DB>({ dialect: new PostgresDialect({ pool: ownerPool }), log });
  const replicas = replicaPools.map((pool) => new Kysely<DB>({ dialect: new PostgresDialect({ pool, cursor: CopyOutCursor }), log }));
  const timeout = opts.statementTimeoutMs ?? DEFAULT_STATEMENT_TIMEOUT_MS;
  const limits = transactionLimits(timeout);
  const costs = createCostMeter();
  const primaryRun = pgTenantRunner(app, timeout);
  const replicaRunners = replicas.map((r) => pgTenantRunner(r, timeout));
  const router = createReplicaRouter({
    primary: app,
    replicas,
    maxLagMs: opts.replicaMaxLagMs ?? 5_000,
    checkEveryMs: opts.replicaCheckEveryMs,
    lsnStore: opts.lsnStore,
    metrics: opts.replicaMetrics,
  });
  if (replicas.length > 0) {
    await router.check();
    router.start();
  }
  const lsnStore = opts.lsnStore;

  /** After a write commits: where the primary's WAL is now, for its principals' next reads. */
  const recordPosition = async (conn: Kysely<DB>, ...principals: string[]) => {
    const { rows } = await sql<{ lsn: string }>`select (pg_current_wal_lsn() - '0/0'::pg_lsn)::text as lsn`.execute(conn);
    const lsn = BigInt(rows[0]!.lsn.split('.')[0]!);
    for (const principal of principals) await lsnStore!.advance(principal, lsn);
  };
  const tracking = replicas.length > 0 && lsnStore !== undefined;
  const trackedPrincipal = () => {
    const principal = currentWriter();
    return tracking ? principal : undefined;
  };
  const withTenant: TenantRunner = meteredTenantRunner((tenantId, fn) => {
    const principal = trackedPrincipal();
    return primaryRun(tenantId, fn, principal ? { afterCommit: (conn) => recordPosition(conn, principal) } : {});
  }, costs);

  // LISTEN needs a session of its own: the owner's direct URL (migrations need one too, for their advisory
  // lock), never PgBouncer's transaction pooling.
  const listenUrl = opts.databaseUrl;
  return withScopes({
    kind: 'postgres',
    app,
    owner,
    costs,
    withTenant,
    withStatement: (query, so = {}) =>
      meteredShares(costs, so.costs, async () => {
        const writers = tracking ? [...new Set((so.writers ?? [trackedPrincipal()]).filter((p): p is string => p !== undefined))] : [];
        if (writers.length === 0) return (await app.executeQuery(query)).rows;
        return app.connection().execute(async (conn) => {
          const { rows } = await conn.executeQuery(query);
          await recordPosition(conn, ...writers).catch(() => undefined);
          return rows;
        });
      }),
    async withTenantRead(tenantId, fn, ro = {}) {
      if (replicaRunners.length === 0) return primaryRun(tenantId, fn, ro);
      // Inside a unit of work (an idempotent POST) reads join its transaction, as before.
      if (currentUnitOfWork()) return primaryRun(tenantId, fn, ro);
      const session = currentReadSession();
      if (session?.wrote) {
        router.countFallback('own_write');
        return primaryRun(tenantId, fn, ro);
      }
      const principal = session?.principal();
      let required: bigint | undefined;
      if (principal && lsnStore) {
        try {
          required = await lsnStore.get(principal);
        } catch {
          // Where this principal last wrote is unknown (Redis down): only the primary is surely fresh.
          router.countFallback('lsn_unknown');
          return primaryRun(tenantId, fn, ro);
        }
      }
      const choice = router.pick(required);
      if (!choice) {
        router.countFallback(required !== undefined && router.states().some((s) => s.inRotation) ? 'replica_behind' : 'no_replica');
        return primaryRun(tenantId, fn, ro);
      }
      try {
        const result = await replicaRunners[choice.index]!(tenantId, fn, { ...ro, standalone: true, requireLsn: choice.verify ? required : undefined });
        router.countRead('replica');
        return result;
      } catch (err) {
        if (err instanceof ReplicaBehindError) {
          router.countFallback('replica_behind');
          return primaryRun(tenantId, fn, ro);
        }
        if (isDatabaseUnavailable(err)) {
          // Replica down: out of rotation until the next successful check; this read is served by the primary.
          router.markDown(choice.index, err);
          router.countFallback('replica_down');
          return primaryRun(tenantId, fn, ro);
        }
        throw err;
      }
    },
    replicas: () => router.states(),
    checkReplicas: () => router.check(),
    async ping() {
      await sql`select 1`.execute(app);
    },
    poolStats: () => ({ total: appPool.totalCount, idle: appPool.idleCount, waiting: appPool.waitingCount }),
    listen: (channel, onNotify) => listenWithReconnect(listenUrl, channel, onNotify),
    async close() {
      router.stop();
      await Promise.all([app.destroy(), owner.destroy(), ...replicas.map((r) => r.destroy())]);
    },
  }, limits, async () => {
    const principal = trackedPrincipal();
    if (principal) await recordPosition(app, principal);
  });
}

/**
 * One client outside the pool, LISTENing on `channel` (a session feature, so on the direct owner URL, not
 * through PgBouncer). Lost connections are retried with backoff; each (re)connect calls onNotify once, for
 * what was sent while it was down.
 */
function listenWithReconnect(url: string, channel: string, onNotify: () => void): () => Promise<void> {
  let client: pg.Client | undefined;
  let stopped = false;
  let delay = 500;
  let timer: NodeJS.Timeout | undefined;
  const connect = async () => {
    if (stopped) return;
    const c = new pg.Client({ connectionString: url, connectionTimeoutMillis: 3_000 });
    client = c;
    c.on('notification', onNotify);
    c.on('error', () => {});
    c.on('end', () => {
      if (stopped) return;
      timer = setTimeout(() => void connect(), delay);
      timer.unref();
      delay = Math.min(delay * 2, 30_000);
    });
    try {
      await c.connect();
      await c.query(`listen ${pg.escapeIdentifier(channel)}`);
      delay = 500;
      onNotify();
    } catch {
      await c.end().catch(() => undefined);
    }
  };
  void connect();
  return async () => {
    stopped = true;
    clearTimeout(timer);
    await client?.end().catch(() => undefined);
  };
}
