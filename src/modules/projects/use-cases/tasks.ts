import type { TenantActorContext } from '../../../platform/http/actor.ts';
import { AppError } from '../../../platform/http/errors.ts';
import { decodeCursor, listFingerprint, toPage } from '../../../platform/http/pagination.ts';
import { newId } from '../../../platform/ids.ts';
import { assigneeNotMember, preconditionFailed, projectArchived, projectNotFound, taskNotFound } from '../projects.errors.ts';
import { PROJECT_EVENTS, type TaskAssignedPayload, type TaskCreatedPayload, type TaskUpdatedPayload } from '../projects.events.ts';
import { findProject } from '../projects.repo.ts';
import * as repo from '../tasks.repo.ts';
import type { Task, TaskChanges, TaskFilters, TaskSort } from '../tasks.repo.ts';
import { actingUser, auditChanges, changedFields, etagOf, ifMatchHolds, normalizeLabels, reviveDates, type Page, type UseCaseContext } from './context.ts';
import { DELETED } from '../../../platform/cache/cache.ts';

export interface TaskListParams extends TaskFilters {
  sort?: TaskSort;
  limit: number;
  cursor?: string;
}

/** The fields of a new task: any task field, and a title. */
export type NewTaskInput = TaskChanges & { title: string };

export interface TaskUseCases {
  /** Numbers the task gap-free within its project (`KEY-<n>`). */
  createTask(ctx: TenantActorContext, projectId: string, input: NewTaskInput): Promise<Task>;
  getTask(tenantId: string, id: string): Promise<Task>;
  listTasks(tenantId: string, projectId: string, params: TaskListParams): Promise<Page<Task>>;
  updateTask(ctx: TenantActorContext, id: string, input: TaskChanges, ifMatch?: string): Promise<Task>;
  deleteTask(ctx: TenantActorContext, id: string, ifMatch?: string): Promise<void>;
}

export function taskUseCases(c: UseCaseContext): TaskUseCases {
  const { scope } = c;

  async function assertMember(tenantId: string, assigneeId: string | null | undefined) {
    if (assigneeId && !(await c.deps.isMember(tenantId, assigneeId))) throw assigneeNotMember(assigneeId);
  }

  return {
    /** A cached task is served only while its project still exists (a project delete cascades to tasks). */
    async getTask(tenantId, id) {
      const load = async () => (await scope.withTenant(tenantId, (trx) => repo.findTask(trx, tenantId, id))) ?? Promise.reject(taskNotFound());
      const task = reviveDates(await c.taskCache.get(tenantId, id, load));
      try {
        await c.getProject(tenantId, task.projectId);
      } catch (err) {
        if (!(err instanceof AppError && err.status === 404)) throw err;
        await c.invalidate(tenantId, { cache: 'tasks', key: id, version: DELETED });
        throw taskNotFound();
      }
      return task;
    },

    async createTask(ctx, projectId, input) {
      const { tenantId } = ctx;
      // The plan's monthly tasks quota (a hard one refuses with billing's 402), answered from billing's cache.
      await c.deps.entitlements({ orgId: tenantId, action: 'tasks.create' });
      await assertMember(tenantId, input.assigneeId);
      const id = newId();
      const actorId = actingUser(ctx);
      return scope.withTenant(tenantId, async (trx) => {
        // Everything that does not need the number comes next. The project row lock that numbers the task is
        // taken by the last statement but the events (whose payload carries the key), and held only until commit.
        await c.record(trx, ctx, 'projects.task.create', { type: 'task', id }, auditChanges({}, input));
        const task = await repo.insertNumberedTask(trx, {
          tenantId,
          id,
          projectId,
          title: input.title,
          description: input.description ?? '',
          status: input.status ?? 'todo',
          priority: input.priority ?? 'none',
          assigneeId: input.assigneeId ?? null,
          labels: normalizeLabels(input.labels ?? []),
          dueDate: input.dueDate ?? null,
          createdBy: actorId,
        });
        if (!task) {
          if (await findProject(trx, tenantId, projectId)) throw projectArchived();
          throw projectNotFound();
        }
        const created: TaskCreatedPayload = {
          taskId: id,
          projectId,
          number: task.number,
          key: task.key,
          title: task.title,
          status: task.status,
          assigneeId: task.assigneeId,
          dueDate: task.dueDate,
          actorId,
        };
        await c.publish(trx, ctx, PROJECT_EVENTS.taskCreated, created);
        if (task.assigneeId) {
          const assigned: TaskAssignedPayload = { taskId: id, projectId, key: task.key, assigneeId: task.assigneeId, previousAssigneeId: null, actorId };
          await c.publish(trx, ctx, PROJECT_EVENTS.taskAssigned, assigned);
        }
        return task;
      });
    },

    async listTasks(tenantId, projectId, params) {
      const { limit, cursor, sort: requested, ...rest } = params;
      const filters = rest.label === undefined ? rest : { ...rest, label: normalizeLabels([rest.label])[0] };
      const sort = requested ?? '-number';
      const fingerprint = listFingerprint({ list: 'tasks', projectId, sort, ...filters, status: filters.status?.join(',') });
      const after = cursor ? decodeCursor(cursor, fingerprint, repo.validTaskPosition(sort)) : undefined;
      const rows = await scope.withTenantRead(tenantId, async (trx) => {
        if (!(await findProject(trx, tenantId, projectId))) throw projectNotFound();
        return repo.listTasks(trx, tenantId, projectId, { ...filters, sort, limit, after });
      });
      return toPage(rows, limit, fingerprint, (t) => repo.taskPosition(t, sort));
    },

    async updateTask(ctx, id, input, ifMatch) {
      const { tenantId } = ctx;
      await assertMember(tenantId, input.assigneeId);
      const changes = input.labels ? { ...input, labels: normalizeLabels(input.labels) } : input;
      const task = await scope.withTenant(tenantId, async (trx) => {
        const current = await repo.findTask(trx, tenantId, id, { forUpdate: true });
        if (!current) throw taskNotFound();
        if (!ifMatchHolds(ifMatch, etagOf(current))) throw preconditionFailed(etagOf(current));
        const diff = changedFields(current, changes);
        if (Object.keys(diff).length === 0) return current;
        await repo.updateTask(trx, tenantId, id, diff);
        const updated = (await repo.findTask(trx, tenantId, id))!;
        const actorId = actingUser(ctx);
        await c.record(trx, ctx, 'projects.task.update', { type: 'task', id }, auditChanges(current, diff));
        const payload: TaskUpdatedPayload = { taskId: id, projectId: updated.projectId, key: updated.key, changes: diff, actorId };
        await c.publish(trx, ctx, PROJECT_EVENTS.taskUpdated, payload);
        if ('assigneeId' in diff) {
          const assigned: TaskAssignedPayload = {
            taskId: id,
            projectId: updated.projectId,
            key: updated.key,
            assigneeId: updated.assigneeId,
            previousAssigneeId: current.assigneeId,
            actorId,
          };
          await c.publish(trx, ctx, PROJECT_EVENTS.taskAssigned, assigned);
        }
        await c.markStale(trx, ctx, { cache: 'tasks', key: id, version: updated.version });
        return updated;
      });
      await c.invalidate(tenantId, { cache: 'tasks', key: id, version: task.version });
      return task;
    },

    async deleteTask(ctx, id, ifMatch) {
      const { tenantId } = ctx;
      await scope.withTenant(tenantId, async (trx) => {
        const current = await repo.findTask(trx, tenantId, id, { forUpdate: true });
        if (!current) throw taskNotFound();
        if (!ifMatchHolds(ifMatch, etagOf(current))) throw preconditionFailed(etagOf(current));
        await repo.deleteTask(trx, tenantId, id);
        await c.record(trx, ctx, 'projects.task.delete', { type: 'task', id }, { key: current.key });
        await c.markStale(trx, ctx, { cache: 'tasks', key: id, version: DELETED });
      });
      await c.invalidate(tenantId, { cache: 'tasks', key: id, version: DELETED });
    },
  };
}
