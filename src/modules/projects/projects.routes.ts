import { Type } from '@sinclair/typebox';
import type { FastifyReply, FastifyRequest } from 'fastify';
import { tenantActorOf as actor } from '../../platform/http/actor.ts';
import { accessOf } from '../../platform/http/auth.ts';
import { DEFAULT_PAGE_SIZE } from '../../platform/http/pagination.ts';
import type { App } from '../../platform/http/server.ts';
import { PERMISSIONS } from '../tenancy/index.ts';
import {
  CommentListQuery,
  CommentPage,
  CommentSchema,
  ConditionalGetHeaders,
  CreateCommentBody,
  CreateProjectBody,
  CreateTaskBody,
  OrgParams,
  PreconditionHeaders,
  ProjectListQuery,
  ProjectPage,
  ProjectParams,
  ProjectSchema,
  TaskListQuery,
  TaskPage,
  TaskParams,
  TaskSchema,
  UpdateProjectBody,
  UpdateTaskBody,
} from './projects.schemas.ts';
import { etagOf, ifNoneMatchHits, type ProjectsService } from './projects.service.ts';

/** The permissions these routes declare, named by tenancy's roles (viewer: read; member: + tasks and
 * comments; admin and owner: + manage projects). */
export const PROJECTS_PERMISSIONS = {
  read: PERMISSIONS.projectsRead,
  tasksWrite: PERMISSIONS.tasksWrite,
  commentsWrite: PERMISSIONS.commentsWrite,
  /** projects themselves: create, rename, archive, delete */
  manage: PERMISSIONS.projectsManage,
} as const;

export interface ProjectsRoutesOptions {
  service: ProjectsService;
}

/** Sends a versioned resource with its ETag, or 304 when the client's If-None-Match still holds. */
function withEtag<T extends { version: number }>(request: FastifyRequest, reply: FastifyReply, resource: T) {
  const etag = etagOf(resource);
  reply.header('etag', etag);
  if (request.method === 'GET' && ifNoneMatchHits(request.headers['if-none-match'], etag)) {
    return reply.code(304).send();
  }
  return resource;
}

const NoContent = Type.Null({ description: 'Deleted' });
const NotModified = Type.Null({ description: 'Not modified (If-None-Match)' });

export async function projectsRoutes(app: App, opts: ProjectsRoutesOptions): Promise<void> {
  const { service } = opts;
  const perm = PROJECTS_PERMISSIONS;
  const tags = ['projects'];

  // ------------------------------------------------------------------------------------------- projects
  app.get(
    '/orgs/:orgId/projects',
    {
      config: { permission: perm.read },
      schema: { tags, summary: 'List projects', params: OrgParams, querystring: ProjectListQuery, response: { 200: ProjectPage } },
    },
    async (request) => {
      const { limit = DEFAULT_PAGE_SIZE, ...q } = request.query;
      return service.listProjects(accessOf(request).orgId, { ...q, limit });
    },
  );

  app.post(
    '/orgs/:orgId/projects',
    {
      config: { permission: perm.manage },
      schema: {
        tags,
        summary: 'Create a project (402 when the plan does not allow another one)',
        params: OrgParams,
        body: CreateProjectBody,
        response: { 201: ProjectSchema },
      },
    },
    async (request, reply) => {
      const project = await service.createProject(actor(request), request.body);
      reply.code(201).header('etag', etagOf(project)).header('location', `${request.url}/${project.id}`);
      return project;
    },
  );

  app.get(
    '/orgs/:orgId/projects/:projectId',
    {
      config: { permission: perm.read },
      schema: { tags, summary: 'Get a project', params: ProjectParams, headers: ConditionalGetHeaders, response: { 200: ProjectSchema, 304: NotModified } },
    },
    async (request, reply) => withEtag(request, reply, await service.getProject(accessOf(request).orgId, request.params.projectId)),
  );

  app.patch(
    '/orgs/:orgId/projects/:projectId',
    {
      config: { permission: perm.manage },
      schema: {
        tags,
        summary: 'Update a project (If-Match optional; 412 when stale)',
        params: ProjectParams,
        headers: PreconditionHeaders,
        body: UpdateProjectBody,
        response: { 200: ProjectSchema },
      },
    },
    async (request, reply) => {
      const project = await service.updateProject(actor(request), request.params.projectId, request.body, request.headers['if-match']);
      return withEtag(request, reply, project);
    },
  );

  app.delete(
    '/orgs/:orgId/projects/:projectId',
    {
      config: { permission: perm.manage },
      schema: {
        tags,
        summary: 'Delete a project with its tasks and comments',
        params: ProjectParams,
        headers: PreconditionHeaders,
        response: { 204: NoContent },
      },
    },
    async (request, reply) => {
      await service.deleteProject(actor(request), request.params.projectId, request.headers['if-match']);
      return reply.code(204).send(null);
    },
  );

  // ---------------------------------------------------------------------------------------------- tasks
  app.get(
    '/orgs/:orgId/projects/:projectId/tasks',
    {
      config: { permission: perm.read },
      schema: {
        tags,
        summary: 'List or search a project’s tasks (keyset pagination)',
        params: ProjectParams,
        querystring: TaskListQuery,
        response: { 200: TaskPage },
      },
    },
    async (request) => {
      const { limit = DEFAULT_PAGE_SIZE, updatedSince, ...q } = request.query;
      const since = updatedSince === undefined ? undefined : new Date(updatedSince);
      return service.listTasks(accessOf(request).orgId, request.params.projectId, { ...q, ...(since && { updatedSince: since }), limit });
    },
  );

  app.post(
    '/orgs/:orgId/projects/:projectId/tasks',
    {
      config: { permission: perm.tasksWrite },
      schema: { tags, summary: 'Create a task', params: ProjectParams, body: CreateTaskBody, response: { 201: TaskSchema } },
    },
    async (request, reply) => {
      const task = await service.createTask(actor(request), request.params.projectId, request.body);
      const location = `/v1/orgs/${request.params.orgId}/tasks/${task.id}`;
      reply.code(201).header('etag', etagOf(task)).header('location', location);
      return task;
    },
  );

  app.get(
    '/orgs/:orgId/tasks/:taskId',
    {
      config: { permission: perm.read },
      schema: { tags, summary: 'Get a task', params: TaskParams, headers: ConditionalGetHeaders, response: { 200: TaskSchema, 304: NotModified } },
    },
    async (request, reply) => withEtag(request, reply, await service.getTask(accessOf(request).orgId, request.params.taskId)),
  );

  app.patch(
    '/orgs/:orgId/tasks/:taskId',
    {
      config: { permission: perm.tasksWrite },
      schema: {
        tags,
        summary: 'Update a task (If-Match optional; 412 when stale)',
        params: TaskParams,
        headers: PreconditionHeaders,
        body: UpdateTaskBody,
        response: { 200: TaskSchema },
      },
    },
    async (request, reply) => {
      const task = await service.updateTask(actor(request), request.params.taskId, request.body, request.headers['if-match']);
      return withEtag(request, reply, task);
    },
  );

  app.delete(
    '/orgs/:orgId/tasks/:taskId',
    {
      config: { permission: perm.tasksWrite },
      schema: { tags, summary: 'Delete a task', params: TaskParams, headers: PreconditionHeaders, response: { 204: NoContent } },
    },
    async (request, reply) => {
      await service.deleteTask(actor(request), request.params.taskId, request.headers['if-match']);
      return reply.code(204).send(null);
    },
  );

  // ------------------------------------------------------------------------------------------- comments
  app.get(
    '/orgs/:orgId/tasks/:taskId/comments',
    {
      config: { permission: perm.read },
      schema: { tags, summary: 'List a task’s comments, oldest first', params: TaskParams, querystring: CommentListQuery, response: { 200: CommentPage } },
    },
    async (request) => {
      const { limit = DEFAULT_PAGE_SIZE, cursor } = request.query;
      return service.listComments(accessOf(request).orgId, request.params.taskId, { limit, cursor });
    },
  );

  app.post(
    '/orgs/:orgId/tasks/:taskId/comments',
    {
      config: { permission: perm.commentsWrite },
      schema: { tags, summary: 'Comment on a task', params: TaskParams, body: CreateCommentBody, response: { 201: CommentSchema } },
    },
    async (request, reply) => {
      const comment = await service.addComment(actor(request), request.params.taskId, request.body.body);
      reply.code(201);
      return comment;
    },
  );
}
