import { asPlugin } from '../../platform/http/module-routes.ts';
import type { ModuleSurface } from '../../platform/module.ts';
import { registerProjectsJobs } from './projects.jobs.ts';
import { projectsRoutes } from './projects.routes.ts';
import { createProjectsService, type ProjectsDeps, type ProjectsService } from './projects.service.ts';

export { PROJECTS_PERMISSIONS } from './projects.routes.ts';
export { PROJECT_EVENTS } from './projects.events.ts';
export type * from './projects.events.ts';
export type { Project } from './projects.repo.ts';
export type { Task, TaskStatus, Priority } from './tasks.repo.ts';
export type { Comment } from './comments.repo.ts';
export { allowEverything, entitlementsVia, isMemberVia } from './projects.service.ts';
export type { Entitlements, IsMember, ProjectsDeps, ProjectsService } from './projects.service.ts';
export { seedProjects, analyzeProjects, type SeedOptions, type SeedProgress } from './projects.seed.ts';

/** The projects facade: its use cases, its HTTP routes and its (so far no) job handlers. */
export interface ProjectsModule extends ModuleSurface, ProjectsService {}

/** Projects, tasks (KEY-123), comments, with their HTTP routes under /v1/orgs/:orgId. */
export function createProjects(deps: ProjectsDeps): ProjectsModule {
  const { service, context } = createProjectsService(deps);
  return {
    ...service,
    name: 'projects',
    routes: [{ name: 'projects', prefix: '/v1', plugin: asPlugin((app) => projectsRoutes(app, { service })) }],
    registerJobs: (jobs) => registerProjectsJobs(jobs, context),
  };
}
