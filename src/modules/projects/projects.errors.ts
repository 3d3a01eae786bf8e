import { AppError } from '../../platform/http/errors.ts';

/** Error codes of the projects module. Another tenant's ids answer the same 404 as unknown ones. */
export const projectNotFound = () => new AppError('PROJECTS.PROJECT_NOT_FOUND', 404, 'Project not found');
export const taskNotFound = () => new AppError('PROJECTS.TASK_NOT_FOUND', 404, 'Task not found');
export const projectKeyTaken = (key: string) =>
  new AppError('PROJECTS.KEY_TAKEN', 409, `A project with key ${key} already exists in this organization`, { key });
export const projectArchived = () =>
  new AppError('PROJECTS.PROJECT_ARCHIVED', 409, 'The project is archived; unarchive it before adding tasks');
export const assigneeNotMember = (assigneeId: string) =>
  new AppError('PROJECTS.ASSIGNEE_NOT_MEMBER', 422, 'The assignee is not a member of this organization', { assigneeId });
export const preconditionFailed = (current: string) =>
  new AppError(
    'HTTP.PRECONDITION_FAILED',
    412,
    'The resource changed since you read it (If-Match does not match its ETag); read it again and retry',
    {},
    { etag: current },
  );
export const planLimitReached = (detail: string) => new AppError('PROJECTS.PLAN_LIMIT_REACHED', 402, detail);
