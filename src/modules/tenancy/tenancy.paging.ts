import { isUuid } from '../../platform/ids.ts';
import { badCursor } from './tenancy.errors.ts';

/** Opaque keyset cursors over UUIDv7 ids (time-ordered). */
export const encodeCursor = (id: string) => Buffer.from(id).toString('base64url');

export function decodeCursor(cursor: string | undefined): string | undefined {
  if (cursor === undefined) return undefined;
  const id = Buffer.from(cursor, 'base64url').toString('utf8');
  if (!isUuid(id)) throw badCursor();
  return id;
}

export function page<T extends { id: string }, R>(rows: T[], limit: number, map: (r: T) => R) {
  const data = rows.slice(0, limit);
  return { data: data.map(map), nextCursor: rows.length > limit ? encodeCursor(data[data.length - 1]!.id) : null };
}
