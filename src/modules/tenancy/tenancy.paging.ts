import { decodeCursor as decodeKeyset, listFingerprint, toPage } from '../../platform/http/pagination.ts';
import { isUuid } from '../../platform/ids.ts';

/**
 * Keyset paging over UUIDv7 ids (time-ordered), on the platform's cursor format: a cursor is bound to
 * its list and filters (`shape`), so one reused elsewhere is a 400 instead of silently skipping rows.
 */
export function decodeCursor(cursor: string | undefined, shape: Record<string, unknown>): string | undefined {
  if (cursor === undefined) return undefined;
  const [, id] = decodeKeyset(cursor, listFingerprint(shape), ([, k]) => typeof k === 'string' && isUuid(k));
  return id as string;
}

export function page<T extends { id: string }, R>(rows: T[], limit: number, shape: Record<string, unknown>, map: (r: T) => R) {
  const p = toPage(rows, limit, listFingerprint(shape), (r) => [null, r.id]);
  return { data: p.data.map(map), nextCursor: p.nextCursor };
}
