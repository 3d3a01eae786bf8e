import type { TenantActorContext } from '../../../platform/http/actor.ts';
import { decodeCursor, listFingerprint, toPage } from '../../../platform/http/pagination.ts';
import { newId } from '../../../platform/ids.ts';
import * as repo from '../comments.repo.ts';
import type { Comment } from '../comments.repo.ts';
import { taskNotFound } from '../projects.errors.ts';
import { PROJECT_EVENTS, type CommentAddedPayload } from '../projects.events.ts';
import { findTask } from '../tasks.repo.ts';
import { actingUser, type Page, type UseCaseContext } from './context.ts';

export interface CommentUseCases {
  addComment(ctx: TenantActorContext, taskId: string, body: string): Promise<Comment>;
  /** Oldest first. */
  listComments(tenantId: string, taskId: string, params: { limit: number; cursor?: string }): Promise<Page<Comment>>;
}

export function commentUseCases(c: UseCaseContext): CommentUseCases {
  const { scope } = c;
  return {
    async addComment(ctx, taskId, body) {
      const { tenantId } = ctx;
      return scope.withTenant(tenantId, async (trx) => {
        const task = await findTask(trx, tenantId, taskId);
        if (!task) throw taskNotFound();
        const authorId = actingUser(ctx);
        const comment = await repo.insertComment(trx, { tenantId, id: newId(), taskId, authorId, body });
        await c.record(trx, ctx, 'projects.comment.create', { type: 'comment', id: comment.id }, { taskId });
        const payload: CommentAddedPayload = { commentId: comment.id, taskId, projectId: task.projectId, authorId };
        await c.publish(trx, ctx, PROJECT_EVENTS.commentAdded, payload);
        return comment;
      });
    },

    async listComments(tenantId, taskId, params) {
      const fingerprint = listFingerprint({ list: 'comments', taskId });
      const after = params.cursor ? String(decodeCursor(params.cursor, fingerprint, repo.validCommentPosition)[1]) : undefined;
      const rows = await scope.withTenantRead(tenantId, async (trx) => {
        if (!(await findTask(trx, tenantId, taskId))) throw taskNotFound();
        return repo.listComments(trx, tenantId, taskId, { limit: params.limit, after });
      });
      return toPage(rows, params.limit, fingerprint, repo.commentPosition);
    },
  };
}
