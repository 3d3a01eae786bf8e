import { commentUseCases, type CommentUseCases } from './use-cases/comments.ts';
import { createUseCaseContext, type ProjectsDeps, type UseCaseContext } from './use-cases/context.ts';
import { projectUseCases, type ProjectUseCases } from './use-cases/projects.ts';
import { taskUseCases, type TaskUseCases } from './use-cases/tasks.ts';

export { allowEverything, entitlementsVia, isMemberVia, etagOf, ifNoneMatchHits, type Entitlements, type IsMember, type ProjectsDeps } from './use-cases/context.ts';
export type { NewProjectInput, ProjectListParams } from './use-cases/projects.ts';
export type { NewTaskInput, TaskListParams } from './use-cases/tasks.ts';

/** The use cases of the projects module, one file per aggregate under use-cases/. */
export interface ProjectsService extends ProjectUseCases, TaskUseCases, CommentUseCases {}

export function createProjectsService(deps: ProjectsDeps): { service: ProjectsService; context: UseCaseContext } {
  const context = createUseCaseContext(deps);
  return { service: { ...projectUseCases(context), ...taskUseCases(context), ...commentUseCases(context) }, context };
}
