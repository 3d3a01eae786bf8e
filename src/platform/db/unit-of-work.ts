import { sql, type CompiledQuery, type Kysely, type Transaction } from 'kysely';
import { inlineParameters } from './inline.ts';
import { isUuid } from '../ids.ts';
import type { DB } from './schema.generated.ts';
import { currentRequestContext, runWithContextField } from '../request-context.ts';

/**
 * A unit of work spans one request: every `withTenant` call made while it is open joins one database
 * transaction (each call in a savepoint of its own, so a call that throws still rolls back only its own
 * writes), and the request's owner decides at the end whether it commits. The idempotency layer uses it
 * to write the stored response in the same transaction as the effects it guards: a committed effect
 * always has its recorded response, and a crash before COMMIT leaves neither.
 */
export interface UnitOfWork {
  /** True once a `withTenant` call opened the transaction. */
  readonly opened: boolean;
  /** True while the transaction holds its connection (BEGIN sent, not yet ended). */
  readonly connected: boolean;
  /** Runs fn inside the shared transaction with tenantId as tenant context (serialized with other calls). */
  run<R>(tenantId: string, fn: (trx: Transaction<DB>) => Promise<R>): Promise<R>;
  /**
   * COMMIT, after `last` when given: one statement run in the transaction first and sent with the COMMIT in one
   * round trip where the server takes several statements (pg). It runs still inside the last call's savepoint
   * and tenant context, which COMMIT ends: it must not depend on them (e.g. it writes a table without row-level
   * security, as the idempotency layer's stored response does). To refuse the commit it must raise an error —
   * its result is not read — and then nothing commits. A no-op when nothing was opened.
   */
  commit(last?: CompiledQuery): Promise<void>;
  rollback(): Promise<void>;
}

/** The request context's `uowSlot`: where a unit of work can be installed later in the request. */
export interface UnitOfWorkSlot {
  uow?: UnitOfWork;
}

/** Gives the code run by fn (a request) a slot in which a unit of work can be opened later. */
export function runWithUnitOfWorkSlot<T>(fn: () => T): T {
  return runWithContextField('uowSlot', {} satisfies UnitOfWorkSlot, fn);
}

/** Installs a unit of work for the rest of the current request (its slot must exist). */
export function setUnitOfWork(uow: UnitOfWork | undefined): boolean {
  const slot = currentRequestContext()?.uowSlot as UnitOfWorkSlot | undefined;
  if (!slot) return false;
  slot.uow = uow;
  return true;
}

export function currentUnitOfWork(): UnitOfWork | undefined {
  return (currentRequestContext()?.uowSlot as UnitOfWorkSlot | undefined)?.uow;
}

/** The tenant of the unit of work's call running now: a nested call must not queue behind it, and restores it. */
const inRun = {
  getStore: (): string | undefined => currentRequestContext()?.uowTenant,
  run: <T>(tenant: string, fn: () => T): T => runWithContextField('uowTenant', tenant, fn),
};

/**
 * Opens lazily: the connection is taken, BEGIN sent and `onBegin` run (e.g. fencing an idempotency claim)
 * at the first `run`, so a request that never writes holds no connection. Until commit or rollback the
 * connection stays checked out of the pool (held by the callback of `db.connection()`).
 */
export interface UnitOfWorkOptions {
  /** Statements that open the transaction (pg: BEGIN plus its transaction-local limits, one round trip). */
  begin?: string;
  /** The server takes several statements in one simple query (pg; not PGlite's extended protocol). */
  multiStatement?: boolean;
}

/** Sets a call's context: its tenant (or none) and no leftover user id. Values are UUIDs (checked) or ''. */
const contextSql = (tenant: string) => `select set_config('app.tenant_id', '${tenant}', true), set_config('app.user_id', '', true)`;

export function createUnitOfWork(db: Kysely<DB>, onBegin: (trx: Transaction<DB>) => Promise<void>, opts: UnitOfWorkOptions = {}): UnitOfWork {
  let conn: Promise<Transaction<DB>> | undefined;
  /** Sends the statements that end the transaction (…; COMMIT, or ROLLBACK) and returns the connection. */
  let end: ((statements: string) => Promise<void>) | undefined;
  let tail: Promise<unknown> = Promise.resolve();
  let savepoints = 0;
  let closed = false;
  let connected = false;
  /**
   * What the last top-level call still owes (release its savepoint, clear its tenant context): sent in front of
   * the next call's own statements, one round trip for both, or never, when COMMIT comes next (COMMIT releases
   * every savepoint, and the settings are transaction-local). A create then saves a round trip, one of the few
   * made while it holds its project's row lock for the task number.
   */
  let owed: string[] | undefined;

  function open(): Promise<Transaction<DB>> {
    if (closed) return Promise.reject(new Error('unit of work already ended'));
    conn ??= new Promise<Transaction<DB>>((ready, fail) => {
      db.connection()
        .execute(async (c) => {
          const trx = c as unknown as Transaction<DB>;
          connected = true;
          await sql.raw(opts.begin ?? 'begin').execute(trx);
          try {
            await onBegin(trx);
          } catch (err) {
            await sql`rollback`.execute(trx).catch(() => undefined);
            connected = false;
            throw err;
          }
          // Held until the owner ends the unit of work; then the connection returns to the pool.
          await new Promise<void>((release) => {
            end = async (statements) => {
              try {
                await sql.raw(statements).execute(trx);
              } catch (err) {
                // A statement sent before COMMIT failed (the COMMIT after it was skipped): end the aborted
                // transaction before the connection goes back (after a failed COMMIT this is a no-op).
                await sql.raw('rollback').execute(trx).catch(() => undefined);
                throw err;
              } finally {
                connected = false;
                release();
              }
            };
            ready(trx);
          });
        })
        .catch((err) => {
          // Never began (no connection, or onBegin refused): nothing is open, nothing to end.
          conn = undefined;
          fail(err);
        });
    });
    return conn;
  }

  /** One call at a time on the shared connection (a request's calls may overlap in Promise.all). */
  function serialized<R>(fn: () => Promise<R>): Promise<R> {
    const next = tail.then(fn, fn);
    tail = next.catch(() => undefined);
    return next;
  }

  return {
    get opened() {
      return conn !== undefined;
    },
    get connected() {
      return connected;
    },
    run<R>(tenantId: string, fn: (trx: Transaction<DB>) => Promise<R>): Promise<R> {
      if (closed) return Promise.reject(new Error('unit of work already ended'));
      if (!isUuid(tenantId)) return Promise.reject(new Error('tenant id must be a UUID'));
      const outer = inRun.getStore();
      const body = async () => {
        // Re-checked here: a call queued behind commit/rollback must never touch the released connection.
        if (closed) throw new Error('unit of work already ended');
        const trx = await open();
        const sp = `uow_${++savepoints}`;
        // One round trip where the server allows it (pg), one statement at a time otherwise (PGlite).
        const exec = async (statements: string[]) => {
          if (opts.multiStatement) await sql.raw(statements.join('; ')).execute(trx);
          else for (const s of statements) await sql.raw(s).execute(trx);
        };
        // Each call starts from a clean context, like a transaction of its own: a setting another call
        // made (app.user_id for the member_self_read policy) must not widen what this one sees. It ends
        // back in the enclosing call's tenant; between calls (and for the request's plain queries,
        // embedded) no tenant context remains.
        const tenant = tenantId.toLowerCase();
        const before = outer === undefined && owed ? owed : [];
        if (outer === undefined) owed = undefined;
        await exec([...before, `savepoint ${sp}`, contextSql(tenant)]);
        let result: R;
        try {
          result = await inRun.run(tenant, () => fn(trx));
        } catch (err) {
          await exec([`rollback to savepoint ${sp}`, contextSql(outer ?? '')]).catch(() => undefined);
          throw err;
        }
        if (outer === undefined) owed = [`release savepoint ${sp}`, contextSql('')];
        else await exec([`release savepoint ${sp}`, contextSql(outer)]);
        return result;
      };
      // A withTenant nested inside another (e.g. a seam called within a use case's transaction) runs at once
      // in a savepoint of its own: queueing it behind the call that awaits it would wait forever.
      return outer !== undefined ? body() : serialized(body);
    },
    commit(last) {
      return serialized(async () => {
        if (closed || !conn) return;
        closed = true;
        const trx = await conn;
        if (last && opts.multiStatement) {
          let text: string;
          try {
            text = inlineParameters(last, 'unit of work commit');
          } catch (err) {
            await end!('rollback');
            throw err;
          }
          // One simple query: a statement that fails skips the COMMIT after it (end() then rolls back).
          return end!(`${text}; commit`);
        }
        try {
          if (last) await trx.executeQuery(last);
        } catch (err) {
          await end!('rollback');
          throw err;
        }
        await end!('commit');
      });
    },
    rollback() {
      return serialized(async () => {
        if (closed || !conn) return;
        closed = true;
        await conn.then(() => end!('rollback'), () => undefined);
      });
    },
  };
}
