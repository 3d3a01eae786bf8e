import type { Logger } from 'pino';
import type { QueryObserver } from '../db/database.ts';
import { dbSlowQueries, observeQuery } from './metrics.ts';

const MAX_LOGGED_SQL = 2_000;
const OPERATIONS = new Set(['select', 'insert', 'update', 'delete', 'with', 'begin', 'commit', 'rollback', 'savepoint', 'release']);

/** The statement kind, a closed set so it can be a metric label. */
export function sqlOperation(sql: string): string {
  const match = /^\s*\(?\s*([a-z]+)/i.exec(sql);
  const word = match?.[1]?.toLowerCase() ?? 'other';
  return OPERATIONS.has(word) ? word : 'other';
}

/**
 * The statement without anything that could be data: Kysely already sends values as $n parameters
 * (which we never log), but `sql.lit`/raw fragments can inline literals, so quoted strings and bare
 * numbers become `?`. Whitespace is collapsed so the same statement always logs the same text.
 */
export function normalizeSql(sql: string): string {
  const normalized = sql
    .replace(/\bE'(?:[^'\\]|\\.|'')*'/g, '?')
    .replace(/'(?:[^']|'')*'/g, '?')
    .replace(/(?<![\w$."])-?\d+(?:\.\d+)?(?![\w"])/g, '?')
    .replace(/\s+/g, ' ')
    .trim();
  return normalized.length > MAX_LOGGED_SQL ? `${normalized.slice(0, MAX_LOGGED_SQL)}…` : normalized;
}

/**
 * The `onQuery` observer for `openDatabase`: every query feeds the duration histogram; one slower than
 * `slowQueryMs` is logged (warn) with its normalized text, never its parameters.
 */
export function createQueryObserver(opts: { logger: Logger; slowQueryMs: number }): QueryObserver {
  const { logger, slowQueryMs } = opts;
  return ({ sql, durationMs, error }) => {
    const operation = sqlOperation(sql);
    observeQuery(operation, durationMs / 1000);
    if (durationMs >= slowQueryMs && slowQueryMs > 0) {
      dbSlowQueries.inc({ operation });
      logger.warn({ sql: normalizeSql(sql), durationMs: Math.round(durationMs * 100) / 100, operation, failed: error !== undefined }, 'slow query');
    }
  };
}
