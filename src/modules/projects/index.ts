import type { FastifyPluginAsync } from 'fastify';
import { projectsRoutes } from './projects.routes.ts';
import { createProjectsService, type ProjectsService, type ProjectsServiceDeps } from './projects.service.ts';

export { PROJECTS_PERMISSIONS } from './projects.routes.ts';
export { PROJECT_EVENTS } from './projects.events.ts';
export type * from './projects.events.ts';
export type { Project, Task, Comment, TaskStatus, Priority } from './projects.repo.ts';
export type {
  AuditEntry,
  AuditPort,
  CachePort,
  Entitlements,
  IsMember,
  OutboxPort,
  ProjectsService,
} from './projects.service.ts';
export { allowEverything, isMemberVia } from './projects.service.ts';
export { seedProjects, type SeedOptions, type SeedProgress } from './projects.seed.ts';

export type ProjectsDeps = ProjectsServiceDeps;

export interface ProjectsModule {
  service: ProjectsService;
  routes: { name: string; prefix: string; plugin: FastifyPluginAsync<any> };
}

/** The projects facade: projects, tasks (KEY-123), comments, with their HTTP routes under /v1/orgs/:orgId. */
export function createProjects(deps: ProjectsDeps): ProjectsModule {
  const service = createProjectsService(deps);
  const plugin: FastifyPluginAsync<any> = async (app) => projectsRoutes(app as any, { service });
  return { service, routes: { name: 'projects', prefix: '/v1', plugin } };
}
