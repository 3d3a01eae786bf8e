import type { Selectable } from 'kysely';
import type { DB } from '../../platform/db/database.ts';
import type { KeysetPosition } from '../../platform/http/pagination.ts';
import { isUuidValue, type Trx } from './projects.repo.ts';

export interface Comment {
  id: string;
  taskId: string;
  authorId: string;
  body: string;
  createdAt: Date;
}

const COMMENT_COLUMNS = ['id', 'task_id', 'author_id', 'body', 'created_at'] as const;
type CommentRow = Pick<Selectable<DB['task_comments']>, (typeof COMMENT_COLUMNS)[number]>;

function toComment(r: CommentRow): Comment {
  return { id: r.id, taskId: r.task_id, authorId: r.author_id, body: r.body, createdAt: new Date(r.created_at) };
}

export async function insertComment(
  trx: Trx,
  c: { tenantId: string; id: string; taskId: string; authorId: string; body: string },
): Promise<Comment> {
  const r = await trx
    .insertInto('task_comments')
    .values({ tenant_id: c.tenantId, id: c.id, task_id: c.taskId, author_id: c.authorId, body: c.body })
    .returning(COMMENT_COLUMNS)
    .executeTakeFirstOrThrow();
  return toComment(r);
}

export function listCommentsQuery(trx: Trx, tenantId: string, taskId: string, q: { limit: number; after?: string }) {
  let query = trx.selectFrom('task_comments').select(COMMENT_COLUMNS).where('tenant_id', '=', tenantId).where('task_id', '=', taskId);
  if (q.after) query = query.where('id', '>', q.after);
  return query.orderBy('id', 'asc').limit(q.limit + 1);
}

export async function listComments(trx: Trx, tenantId: string, taskId: string, q: { limit: number; after?: string }): Promise<Comment[]> {
  return (await listCommentsQuery(trx, tenantId, taskId, q).execute()).map(toComment);
}

/** Comments are listed in id order (UUIDv7 = creation order): the position is the id twice. */
export function validCommentPosition([v, id]: KeysetPosition) {
  return isUuidValue(v) && v === id;
}

export function commentPosition(c: Comment): KeysetPosition {
  return [c.id, c.id];
}
