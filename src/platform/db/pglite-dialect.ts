import type { PGlite } from '@electric-sql/pglite';
import {
  CompiledQuery,
  PostgresAdapter,
  PostgresIntrospector,
  PostgresQueryCompiler,
  type DatabaseConnection,
  type Dialect,
  type Driver,
  type Kysely,
  type QueryResult,
  type TransactionSettings,
} from 'kysely';
import { currentUnitOfWork } from './unit-of-work.ts';

/**
 * PGlite has exactly one connection. Kysely holds a connection for a whole transaction, so every
 * acquisition goes through this FIFO lock: transactions run one after another, never interleaved.
 * Owner and app dialects over the same PGlite share one lock.
 */
export function createConnectionLock() {
  let tail: Promise<void> = Promise.resolve();
  return {
    acquire(): Promise<() => void> {
      let release!: () => void;
      const next = new Promise<void>((resolve) => (release = resolve));
      const ready = tail.then(() => release);
      tail = tail.then(() => next);
      return ready;
    },
  };
}

export type ConnectionLock = ReturnType<typeof createConnectionLock>;

interface PgliteSession {
  /** The role the single connection currently runs as; null means the owner (superuser). */
  currentRole: string | null;
}

/** What the dialect uses of a PGlite instance (database.ts hands it a guarded view). */
export type PgliteQueries = Pick<PGlite, 'query' | 'exec'>;

export function createPgliteDialect(opts: {
  pglite: PgliteQueries;
  lock: ConnectionLock;
  session: PgliteSession;
  /** Role this dialect's queries run as; null = owner. */
  role: string | null;
}): Dialect {
  return {
    createAdapter: () => new PostgresAdapter(),
    createQueryCompiler: () => new PostgresQueryCompiler(),
    createIntrospector: (db: Kysely<any>) => new PostgresIntrospector(db),
    createDriver: () => createPgliteDriver(opts),
  };
}

function createPgliteDriver(opts: {
  pglite: PgliteQueries;
  lock: ConnectionLock;
  session: PgliteSession;
  role: string | null;
}): Driver {
  const releases = new WeakMap<DatabaseConnection, () => void>();
  /** Connections handed out inside a request's open unit of work: their "transactions" nest as savepoints. */
  const nested = new WeakMap<DatabaseConnection, string>();
  let nestedCount = 0;

  const connection: DatabaseConnection = {
    async executeQuery<R>(compiled: CompiledQuery): Promise<QueryResult<R>> {
      const result = await opts.pglite.query<R>(compiled.sql, compiled.parameters as unknown[]);
      return {
        rows: result.rows,
        numAffectedRows: result.affectedRows === undefined ? undefined : BigInt(result.affectedRows),
      };
    },
    // eslint-disable-next-line require-yield
    async *streamQuery(): AsyncIterableIterator<QueryResult<any>> {
      throw new Error('streamQuery is not supported by the PGlite driver');
    },
  };

  return {
    async init() {},
    async acquireConnection() {
      // PGlite has one connection. While the current request's unit of work holds it (an open transaction),
      // the request's other queries run on it, inside that transaction: waiting for the lock would wait
      // for the request itself.
      if (currentUnitOfWork()?.connected && opts.session.currentRole === opts.role) {
        const conn = Object.create(connection) as DatabaseConnection;
        releases.set(conn, () => {});
        nested.set(conn, `nested_tx_${++nestedCount}`);
        return conn;
      }
      const release = await opts.lock.acquire();
      try {
        if (opts.session.currentRole !== opts.role) {
          await opts.pglite.exec(opts.role === null ? 'RESET ROLE' : `SET ROLE ${opts.role}`);
          opts.session.currentRole = opts.role;
        }
      } catch (err) {
        release();
        throw err;
      }
      // One connection object per acquisition so the WeakMap keys the right release function.
      const conn = Object.create(connection) as DatabaseConnection;
      releases.set(conn, release);
      return conn;
    },
    async beginTransaction(conn: DatabaseConnection, settings: TransactionSettings) {
      // BEGIN inside the unit of work's transaction would be ignored and its COMMIT would end the outer one.
      const savepoint = nested.get(conn);
      if (savepoint) return void (await conn.executeQuery(savepointCommand('savepoint', savepoint)));
      const parts = ['begin'];
      if (settings.isolationLevel) parts.push(`isolation level ${settings.isolationLevel}`);
      if (settings.accessMode) parts.push(settings.accessMode);
      await conn.executeQuery(CompiledQuery.raw(parts.join(' ')));
    },
    async commitTransaction(conn: DatabaseConnection) {
      const savepoint = nested.get(conn);
      await conn.executeQuery(savepoint ? savepointCommand('release savepoint', savepoint) : CompiledQuery.raw('commit'));
    },
    async rollbackTransaction(conn: DatabaseConnection) {
      const savepoint = nested.get(conn);
      await conn.executeQuery(savepoint ? savepointCommand('rollback to savepoint', savepoint) : CompiledQuery.raw('rollback'));
    },
    async savepoint(conn, name) {
      await conn.executeQuery(savepointCommand('savepoint', name));
    },
    async rollbackToSavepoint(conn, name) {
      await conn.executeQuery(savepointCommand('rollback to savepoint', name));
    },
    async releaseSavepoint(conn, name) {
      await conn.executeQuery(savepointCommand('release savepoint', name));
    },
    async releaseConnection(conn: DatabaseConnection) {
      releases.get(conn)?.();
      releases.delete(conn);
    },
    async destroy() {},
  };
}

function savepointCommand(command: string, name: string): CompiledQuery {
  if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(name)) throw new Error(`invalid savepoint name ${name}`);
  return CompiledQuery.raw(`${command} ${name}`);
}
