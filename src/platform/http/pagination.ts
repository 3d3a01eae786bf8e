import { createHash } from 'node:crypto';
import { Type } from '@sinclair/typebox';
import { AppError } from './errors.ts';
import { findHostileValue } from './input.ts';

export const MAX_PAGE_SIZE = 100;
export const DEFAULT_PAGE_SIZE = 25;

/** `limit` and `cursor` query members every keyset list accepts. */
export const pageQuery = {
  limit: Type.Optional(Type.Integer({ minimum: 1, maximum: MAX_PAGE_SIZE, default: DEFAULT_PAGE_SIZE })),
  cursor: Type.Optional(Type.String({ minLength: 1, maxLength: 512, description: 'Opaque cursor from nextCursor' })),
};

/** Position after the last row of a page: the sort key's value and a unique tiebreaker. */
export type KeysetPosition = [value: string | number | boolean | null, tiebreak: string | number];

interface CursorBody {
  v: 1;
  /** which sort + filters the cursor belongs to: a cursor reused with other ones would skip or repeat rows */
  f: string;
  k: KeysetPosition;
}

/** Fingerprint of everything that shapes a list (sort and filters), so a cursor is bound to its query. */
export function listFingerprint(shape: Record<string, unknown>): string {
  const canonical = JSON.stringify(Object.keys(shape).sort().map((k) => [k, shape[k] ?? null]));
  return createHash('sha256').update(canonical).digest('base64url').slice(0, 16);
}

export function encodeCursor(fingerprint: string, position: KeysetPosition): string {
  const body: CursorBody = { v: 1, f: fingerprint, k: position };
  return Buffer.from(JSON.stringify(body)).toString('base64url');
}

export const badCursor = (detail = 'The cursor is malformed; use nextCursor from a previous page') => new AppError('HTTP.BAD_CURSOR', 400, detail);

/** Decodes a cursor made by encodeCursor for the same list shape; anything else is a 400. */
export function decodeCursor(
  cursor: string,
  fingerprint: string,
  valid: (position: KeysetPosition) => boolean = () => true,
): KeysetPosition {
  let body: unknown;
  try {
    body = JSON.parse(Buffer.from(cursor, 'base64url').toString('utf8'));
  } catch {
    throw badCursor();
  }
  const b = body as Partial<CursorBody> | null;
  const k = b?.k;
  const scalar = (x: unknown) => x === null || ['string', 'number', 'boolean'].includes(typeof x);
  if (!b || b.v !== 1 || typeof b.f !== 'string' || !Array.isArray(k) || k.length !== 2 || !scalar(k[0])) {
    throw badCursor();
  }
  if (typeof k[1] !== 'string' && typeof k[1] !== 'number') {
    throw badCursor();
  }
  // Decoded values reach SQL: no NUL, lone surrogate or non-finite number, whichever list it is.
  if (findHostileValue(k) !== null) throw badCursor();
  if (b.f !== fingerprint) {
    throw badCursor('The cursor belongs to a different sort or filter; start again without a cursor');
  }
  // Cursor values become query parameters: a forged one must be a 400, never a database cast error.
  if (!valid(k as KeysetPosition)) throw badCursor();
  return k as KeysetPosition;
}

/** Turns `limit + 1` fetched rows into a page and its next cursor. */
export function toPage<T>(
  rows: T[],
  limit: number,
  fingerprint: string,
  positionOf: (row: T) => KeysetPosition,
): { data: T[]; nextCursor: string | null } {
  if (rows.length <= limit) return { data: rows, nextCursor: null };
  const data = rows.slice(0, limit);
  return { data, nextCursor: encodeCursor(fingerprint, positionOf(data[data.length - 1]!)) };
}
