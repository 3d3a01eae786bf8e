/** Events the projects module publishes (through the outbox, in the transaction of the change). */
export const PROJECT_EVENTS = {
  projectCreated: 'projects.project_created',
  taskCreated: 'projects.task_created',
  taskUpdated: 'projects.task_updated',
  taskAssigned: 'projects.task_assigned',
  commentAdded: 'projects.comment_added',
  /** Internal: a cached project or task changed; its handler invalidates the cache until that lands. */
  cacheStale: 'projects.cache_stale',
} as const;

export type ProjectEventName = (typeof PROJECT_EVENTS)[keyof typeof PROJECT_EVENTS];

export interface ProjectCreatedPayload {
  projectId: string;
  key: string;
  name: string;
  actorId: string;
}
export interface TaskCreatedPayload {
  taskId: string;
  projectId: string;
  number: number;
  key: string;
  title: string;
  status: string;
  assigneeId: string | null;
  /** YYYY-MM-DD (reporting's overdue count). */
  dueDate?: string | null;
  actorId: string;
}
export interface TaskUpdatedPayload {
  taskId: string;
  projectId: string;
  key: string;
  /** field name → new value, only the fields that changed */
  changes: Record<string, unknown>;
  actorId: string;
}
export interface TaskAssignedPayload {
  taskId: string;
  projectId: string;
  key: string;
  assigneeId: string | null;
  previousAssigneeId: string | null;
  actorId: string;
}
export interface CommentAddedPayload {
  commentId: string;
  taskId: string;
  projectId: string;
  authorId: string;
}
export interface CacheStalePayload {
  cache: 'projects' | 'tasks';
  key: string;
  /** The version now committed; DELETED (MAX_SAFE_INTEGER) when the row is gone. */
  version: number;
}
/** The cache-stale event as published: a platform event (no tenant context) naming the tenant's key. */
export interface CacheStaleEvent extends CacheStalePayload {
  tenantId: string;
}
