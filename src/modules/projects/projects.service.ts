import type { Database } from '../../platform/db/database.ts';
import type { Principal } from '../../platform/http/auth.ts';
import { AppError } from '../../platform/http/errors.ts';
import { decodeCursor, listFingerprint, toPage, type KeysetPosition } from '../../platform/http/pagination.ts';
import { newId } from '../../platform/ids.ts';
import {
  assigneeNotMember,
  planLimitReached,
  preconditionFailed,
  projectArchived,
  projectKeyTaken,
  projectNotFound,
  taskNotFound,
} from './projects.errors.ts';
import { PROJECT_EVENTS } from './projects.events.ts';
import * as repo from './projects.repo.ts';
import type { Comment, Project, ProjectSort, Task, TaskChanges, TaskFilters, TaskSort, Trx } from './projects.repo.ts';

/** Who does something, where, and for which request: the context every mutation records. */
export interface ActorContext {
  tenantId: string;
  principal: Principal;
  requestId: string;
  ip?: string;
}

/** The tenancy module's answer to "is this user a member of this org?". */
export type IsMember = (orgId: string, userId: string) => Promise<boolean>;

/** Appends an event in the caller's transaction (the async backbone's outbox: platform.events). */
export interface OutboxPort {
  add(trx: Trx, event: { name: string; tenantId: string; payload: object; requestId?: string }): Promise<unknown>;
}

/** Appends an audit record in the caller's transaction (the audit module's `audit.record`). */
export interface AuditPort {
  record(trx: Trx, event: AuditEntry): Promise<unknown>;
}

export interface AuditEntry {
  orgId: string;
  action: string;
  target: { type: 'project' | 'task' | 'comment'; id: string };
  changes?: Record<string, unknown>;
  context: {
    actor: { type: 'user' | 'api_key'; id: string; userId: string };
    requestId: string;
    ip?: string;
  };
}

/** Tenant-scoped cache-aside for hot reads (the edge helper: platform.cache). */
export interface CachePort {
  namespace<T>(name: string, opts: { ttlSec: number }): {
    get(tenantId: string, key: string, loader: () => Promise<T>): Promise<T>;
    invalidate(tenantId: string, key: string): Promise<void>;
  };
}

/** Hot entries live this long in Redis at most; every change invalidates them at once anyway. */
const CACHE_TTL_SEC = 300;

/** Plan limits: billing decides whether an org may create one more project. */
export type Entitlements = (request: {
  orgId: string;
  action: 'projects.create';
  current: number;
}) => Promise<{ allowed: true } | { allowed: false; reason: string }>;

/** Adapts tenancy's `getMember` (which throws a 404 AppError for a non-member) to IsMember. */
export function isMemberVia(getMember: (orgId: string, userId: string) => Promise<unknown>): IsMember {
  return async (orgId, userId) => {
    try {
      await getMember(orgId, userId);
      return true;
    } catch (err) {
      if (err instanceof AppError && err.status === 404) return false;
      throw err;
    }
  };
}

export const allowEverything: Entitlements = async () => ({ allowed: true });

export interface ProjectsServiceDeps {
  db: Database;
  isMember: IsMember;
  /** Seams for modules that land separately; when absent nothing is published/recorded/cached. */
  outbox?: OutboxPort;
  audit?: AuditPort;
  cache?: CachePort;
  entitlements?: Entitlements;
}

export const etagOf = (r: { version: number }) => `"v${r.version}"`;

/** If-Match semantics (RFC 9110): absent = unconditional, `*` = any current version, else a list of tags. */
export function ifMatchHolds(ifMatch: string | undefined, etag: string): boolean {
  if (ifMatch === undefined) return true;
  const tags = ifMatch.split(',').map((t) => t.trim().replace(/^W\//, ''));
  return tags.includes('*') || tags.includes(etag);
}

/** If-None-Match on a GET: true when the client's copy is current (answer 304). */
export function ifNoneMatchHits(ifNoneMatch: string | undefined, etag: string): boolean {
  if (ifNoneMatch === undefined) return false;
  const tags = ifNoneMatch.split(',').map((t) => t.trim().replace(/^W\//, ''));
  return tags.includes('*') || tags.includes(etag);
}


export interface ProjectListParams {
  archived?: boolean;
  sort?: ProjectSort;
  limit: number;
  cursor?: string;
}

export interface TaskListParams extends TaskFilters {
  sort?: TaskSort;
  limit: number;
  cursor?: string;
}

/** The fields of a new task: any task field, and a title. */
export type NewTaskInput = TaskChanges & { title: string };

export function createProjectsService(deps: ProjectsServiceDeps) {
  const { db, outbox, audit } = deps;
  const entitlements = deps.entitlements ?? allowEverything;
  const projectCache = deps.cache?.namespace<Project>('projects', { ttlSec: CACHE_TTL_SEC });
  const taskCache = deps.cache?.namespace<Task>('tasks', { ttlSec: CACHE_TTL_SEC });

  async function record(
    trx: Trx,
    ctx: ActorContext,
    action: string,
    target: AuditEntry['target'],
    changes: Record<string, unknown> = {},
  ) {
    const p = ctx.principal;
    const actor = p.kind === 'api_key' && p.apiKeyId ? { type: 'api_key' as const, id: p.apiKeyId, userId: p.userId } : { type: 'user' as const, id: p.userId, userId: p.userId };
    await audit?.record(trx, { orgId: ctx.tenantId, action, target, changes, context: { actor, requestId: ctx.requestId, ip: ctx.ip } });
  }
  async function publish(trx: Trx, ctx: ActorContext, type: string, payload: object) {
    await outbox?.add(trx, { name: type, tenantId: ctx.tenantId, payload, requestId: ctx.requestId });
  }
  async function assertMember(tenantId: string, assigneeId: string | null | undefined) {
    if (assigneeId && !(await deps.isMember(tenantId, assigneeId))) throw assigneeNotMember(assigneeId);
  }

  /** Hot read through the cache. Loads go to the primary (a lagging replica must not refill the cache with a
   * stale row right after an invalidation); not-found throws, so misses are never cached. */
  async function getProject(tenantId: string, id: string): Promise<Project> {
    const load = async () => (await db.withTenant(tenantId, (trx) => repo.findProject(trx, tenantId, id))) ?? Promise.reject(projectNotFound());
    return projectCache ? projectCache.get(tenantId, id, load) : load();
  }

  async function createProject(ctx: ActorContext, input: { key: string; name: string; description?: string }): Promise<Project> {
    const { tenantId } = ctx;
    return db.withTenant(tenantId, async (trx) => {
      await repo.lockProjectCreation(trx, tenantId);
      const current = await repo.countProjects(trx, tenantId);
      const verdict = await entitlements({ orgId: tenantId, action: 'projects.create', current });
      if (!verdict.allowed) throw planLimitReached(verdict.reason);
      const project = await repo.insertProject(trx, {
        tenantId,
        id: newId(),
        key: input.key,
        name: input.name,
        description: input.description ?? '',
        createdBy: ctx.principal.userId,
      });
      if (!project) throw projectKeyTaken(input.key);
      await record(trx, ctx, 'projects.project.create', { type: 'project', id: project.id }, auditChanges({}, input));
      await publish(trx, ctx, PROJECT_EVENTS.projectCreated, {
        projectId: project.id,
        key: project.key,
        name: project.name,
        actorId: ctx.principal.userId,
      });
      return project;
    });
  }

  async function listProjects(tenantId: string, params: ProjectListParams) {
    const sort = params.sort ?? '-createdAt';
    const fingerprint = listFingerprint({ list: 'projects', sort, archived: params.archived });
    const after = params.cursor ? decodeCursor(params.cursor, fingerprint, repo.validProjectPosition(sort)) : undefined;
    const rows = await db.withTenantRead(tenantId, (trx) =>
      repo.listProjects(trx, tenantId, { archived: params.archived, sort, limit: params.limit, after }),
    );
    return toPage(rows, params.limit, fingerprint, (p) => repo.projectPosition(p, sort));
  }

  async function updateProject(
    ctx: ActorContext,
    id: string,
    changes: { name?: string; description?: string; archived?: boolean },
    ifMatch?: string,
  ): Promise<Project> {
    const { tenantId } = ctx;
    const updated = await db.withTenant(tenantId, async (trx) => {
      const current = await repo.findProject(trx, tenantId, id, { forUpdate: true });
      if (!current) throw projectNotFound();
      if (!ifMatchHolds(ifMatch, etagOf(current))) throw preconditionFailed(etagOf(current));
      const diff = changedFields(current, changes);
      if (Object.keys(diff).length === 0) return current;
      const project = await repo.updateProject(trx, tenantId, id, diff);
      await record(trx, ctx, 'projects.project.update', { type: 'project', id }, auditChanges(current, diff));
      return project;
    });
    await projectCache?.invalidate(tenantId, id);
    return updated;
  }

  async function deleteProject(ctx: ActorContext, id: string, ifMatch?: string): Promise<void> {
    const { tenantId } = ctx;
    await db.withTenant(tenantId, async (trx) => {
      const current = await repo.findProject(trx, tenantId, id, { forUpdate: true });
      if (!current) throw projectNotFound();
      if (!ifMatchHolds(ifMatch, etagOf(current))) throw preconditionFailed(etagOf(current));
      await repo.deleteProject(trx, tenantId, id);
      await record(trx, ctx, 'projects.project.delete', { type: 'project', id }, { key: current.key });
    });
    // Its tasks are gone too (cascade); cached tasks are re-checked against their project on read.
    await projectCache?.invalidate(tenantId, id);
  }

  /** A cached task is served only while its project still exists (a project delete cascades to tasks). */
  async function getTask(tenantId: string, id: string): Promise<Task> {
    const load = async () => (await db.withTenant(tenantId, (trx) => repo.findTask(trx, tenantId, id))) ?? Promise.reject(taskNotFound());
    if (!taskCache) return load();
    const task = await taskCache.get(tenantId, id, load);
    try {
      await getProject(tenantId, task.projectId);
    } catch (err) {
      if (!(err instanceof AppError && err.status === 404)) throw err;
      await taskCache.invalidate(tenantId, id);
      throw taskNotFound();
    }
    return task;
  }

  async function createTask(ctx: ActorContext, projectId: string, input: NewTaskInput): Promise<Task> {
    const { tenantId } = ctx;
    await assertMember(tenantId, input.assigneeId);
    return db.withTenant(tenantId, async (trx) => {
      const next = await repo.nextTaskNumber(trx, tenantId, projectId);
      if (!next) {
        if (await repo.findProject(trx, tenantId, projectId)) throw projectArchived();
        throw projectNotFound();
      }
      const id = newId();
      await repo.insertTask(trx, {
        tenantId,
        id,
        projectId,
        number: next.number,
        title: input.title,
        description: input.description ?? '',
        status: input.status ?? 'todo',
        priority: input.priority ?? 'none',
        assigneeId: input.assigneeId ?? null,
        labels: normalizeLabels(input.labels ?? []),
        dueDate: input.dueDate ?? null,
        createdBy: ctx.principal.userId,
      });
      const task = (await repo.findTask(trx, tenantId, id))!;
      await record(trx, ctx, 'projects.task.create', { type: 'task', id }, auditChanges({}, input));
      await publish(trx, ctx, PROJECT_EVENTS.taskCreated, {
        taskId: id,
        projectId,
        number: task.number,
        key: task.key,
        title: task.title,
        status: task.status,
        assigneeId: task.assigneeId,
        actorId: ctx.principal.userId,
      });
      if (task.assigneeId) {
        await publish(trx, ctx, PROJECT_EVENTS.taskAssigned, {
          taskId: id,
          projectId,
          key: task.key,
          assigneeId: task.assigneeId,
          previousAssigneeId: null,
          actorId: ctx.principal.userId,
        });
      }
      return task;
    });
  }

  async function listTasks(tenantId: string, projectId: string, params: TaskListParams) {
    const { limit, cursor, sort: requested, ...rest } = params;
    const filters = rest.label === undefined ? rest : { ...rest, label: normalizeLabels([rest.label])[0] };
    const sort = requested ?? '-number';
    const fingerprint = listFingerprint({ list: 'tasks', projectId, sort, ...filters, status: filters.status?.join(',') });
    const after = cursor ? decodeCursor(cursor, fingerprint, repo.validTaskPosition(sort)) : undefined;
    const rows = await db.withTenantRead(tenantId, async (trx) => {
      if (!(await repo.findProject(trx, tenantId, projectId))) throw projectNotFound();
      return repo.listTasks(trx, tenantId, projectId, { ...filters, sort, limit, after });
    });
    return toPage(rows, limit, fingerprint, (t) => repo.taskPosition(t, sort));
  }

  async function updateTask(ctx: ActorContext, id: string, input: TaskChanges, ifMatch?: string): Promise<Task> {
    const { tenantId } = ctx;
    await assertMember(tenantId, input.assigneeId);
    const changes = input.labels ? { ...input, labels: normalizeLabels(input.labels) } : input;
    const task = await db.withTenant(tenantId, async (trx) => {
      const current = await repo.findTask(trx, tenantId, id, { forUpdate: true });
      if (!current) throw taskNotFound();
      if (!ifMatchHolds(ifMatch, etagOf(current))) throw preconditionFailed(etagOf(current));
      const diff = changedFields(current, changes);
      if (Object.keys(diff).length === 0) return current;
      await repo.updateTask(trx, tenantId, id, diff);
      const updated = (await repo.findTask(trx, tenantId, id))!;
      await record(trx, ctx, 'projects.task.update', { type: 'task', id }, auditChanges(current, diff));
      await publish(trx, ctx, PROJECT_EVENTS.taskUpdated, {
        taskId: id,
        projectId: updated.projectId,
        key: updated.key,
        changes: diff,
        actorId: ctx.principal.userId,
      });
      if ('assigneeId' in diff) {
        await publish(trx, ctx, PROJECT_EVENTS.taskAssigned, {
          taskId: id,
          projectId: updated.projectId,
          key: updated.key,
          assigneeId: updated.assigneeId,
          previousAssigneeId: current.assigneeId,
          actorId: ctx.principal.userId,
        });
      }
      return updated;
    });
    await taskCache?.invalidate(tenantId, id);
    return task;
  }

  async function deleteTask(ctx: ActorContext, id: string, ifMatch?: string): Promise<void> {
    const { tenantId } = ctx;
    await db.withTenant(tenantId, async (trx) => {
      const current = await repo.findTask(trx, tenantId, id, { forUpdate: true });
      if (!current) throw taskNotFound();
      if (!ifMatchHolds(ifMatch, etagOf(current))) throw preconditionFailed(etagOf(current));
      await repo.deleteTask(trx, tenantId, id);
      await record(trx, ctx, 'projects.task.delete', { type: 'task', id }, { key: current.key });
    });
    await taskCache?.invalidate(tenantId, id);
  }

  async function addComment(ctx: ActorContext, taskId: string, body: string): Promise<Comment> {
    const { tenantId } = ctx;
    return db.withTenant(tenantId, async (trx) => {
      const task = await repo.findTask(trx, tenantId, taskId);
      if (!task) throw taskNotFound();
      const comment = await repo.insertComment(trx, { tenantId, id: newId(), taskId, authorId: ctx.principal.userId, body });
      await record(trx, ctx, 'projects.comment.create', { type: 'comment', id: comment.id }, { taskId });
      await publish(trx, ctx, PROJECT_EVENTS.commentAdded, {
        commentId: comment.id,
        taskId,
        projectId: task.projectId,
        authorId: ctx.principal.userId,
      });
      return comment;
    });
  }

  async function listComments(tenantId: string, taskId: string, params: { limit: number; cursor?: string }) {
    const fingerprint = listFingerprint({ list: 'comments', taskId });
    const after = params.cursor ? String(decodeCursor(params.cursor, fingerprint, repo.validCommentPosition)[1]) : undefined;
    const rows = await db.withTenantRead(tenantId, async (trx) => {
      if (!(await repo.findTask(trx, tenantId, taskId))) throw taskNotFound();
      return repo.listComments(trx, tenantId, taskId, { limit: params.limit, after });
    });
    return toPage(rows, params.limit, fingerprint, (c): KeysetPosition => [c.id, c.id]);
  }

  return {
    createProject,
    getProject,
    listProjects,
    updateProject,
    deleteProject,
    createTask,
    getTask,
    listTasks,
    updateTask,
    deleteTask,
    addComment,
    listComments,
  };
}

export type ProjectsService = ReturnType<typeof createProjectsService>;

/** Only the fields whose value actually differs: what the audit log and task_updated events carry. */
function changedFields<C extends object>(current: object, changes: C): Partial<C> {
  const diff: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(changes)) {
    if (v === undefined) continue;
    const before = (current as Record<string, unknown>)[k];
    if (JSON.stringify(before) !== JSON.stringify(v)) diff[k] = v;
  }
  return diff as Partial<C>;
}

/** Audit `changes` in the audit module's shape, `{ field: { from, to } }`; long text recorded by length only. */
function auditChanges(before: object, after: object): Record<string, unknown> {
  const show = (v: unknown) => (typeof v === 'string' && v.length > 200 ? `(${v.length} characters)` : v);
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(after)) {
    if (v === undefined) continue;
    const from = (before as Record<string, unknown>)[k];
    out[k] = from === undefined ? { to: show(v) } : { from: show(from), to: show(v) };
  }
  return out;
}

/** Labels are case-insensitive tags: trimmed, lower-cased, de-duplicated, kept in first-seen order. */
function normalizeLabels(labels: string[]): string[] {
  return [...new Set(labels.map((l) => l.trim().toLowerCase()).filter((l) => l.length > 0))];
}
