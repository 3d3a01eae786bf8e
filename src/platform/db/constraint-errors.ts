/** Postgres unique_violation (23505), as raised by pg and by PGlite: a constraint settled a race. */
export function isUniqueViolation(err: unknown): boolean {
  return typeof err === 'object' && err !== null && (err as { code?: string }).code === '23505';
}
