/** SQLSTATE classes that mean "the server is not there" rather than "the query is wrong". */
// 28000/28P01: the login was refused (a rotated or wrong app-role password): new connections fail until it
// is fixed, and clients should see 503 + Retry-After like any other outage, not 500.
// PgBouncer reports a refused login as 08P01 (protocol violation), which class 08 covers.
const UNAVAILABLE_SQLSTATES = new Set(['57P01', '57P02', '57P03', '08000', '08001', '08003', '08004', '08006', '08P01', '28000', '28P01']);
const UNAVAILABLE_CODES = new Set(['ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'EHOSTUNREACH', 'ENETUNREACH', 'EPIPE', 'EAI_AGAIN']);
const UNAVAILABLE_MESSAGES =
  /timeout exceeded when trying to connect|connection terminated|not queryable|database closed|the database system is (starting up|shutting down)/i;

/**
 * True when a database error means Postgres is unreachable (down, restarting, pool exhausted for longer
 * than connectionTimeoutMillis): the request should fail fast with 503 and be retried, not 500.
 */
export function isDatabaseUnavailable(err: unknown): boolean {
  if (typeof err !== 'object' || err === null) return false;
  const e = err as { code?: unknown; message?: unknown; errors?: unknown };
  if (typeof e.code === 'string' && (UNAVAILABLE_SQLSTATES.has(e.code) || UNAVAILABLE_CODES.has(e.code))) return true;
  // Node reports a refused connect to a host with several addresses as an AggregateError.
  if (Array.isArray(e.errors) && e.errors.some(isDatabaseUnavailable)) return true;
  return typeof e.message === 'string' && UNAVAILABLE_MESSAGES.test(e.message);
}

/** Login refused: wrong password, unknown role, pg_hba.conf, or the database does not exist. */
export function isLoginRefused(err: unknown): boolean {
  const { code, message } = (err ?? {}) as { code?: unknown; message?: unknown };
  if (typeof code !== 'string') return false;
  if (code.startsWith('28') || code === '3D000') return true;
  // PgBouncer: "SASL authentication failed", "password authentication failed", "no such user" as 08P01.
  return code === '08P01' && typeof message === 'string' && /authentication failed|no such user/i.test(message);
}

export class DatabaseConnectError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'DatabaseConnectError';
  }
}

/**
 * One line an operator can act on, for an error met while connecting at start (unreachable server, refused
 * login); undefined for anything else.
 */
export function describeConnectError(err: unknown): string | undefined {
  if (err instanceof DatabaseConnectError) return err.message;
  const message = err instanceof Error ? err.message : String(err);
  if (isLoginRefused(err)) return `PostgreSQL refused the login: ${message} (check DATABASE_URL / DATABASE_APP_URL; see docs/production.md)`;
  if (isDatabaseUnavailable(err)) {
    // Node reports a refused connect to a host with several addresses as an AggregateError with no message.
    const inner = (err as { errors?: Array<{ message?: string }> }).errors?.map((e) => e.message).join(', ');
    const detail = message || inner || (err as { code?: string }).code || 'unreachable';
    return `PostgreSQL is unreachable: ${detail} (check DATABASE_URL and that the server is up)`;
  }
  return undefined;
}
