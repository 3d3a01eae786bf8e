import type { ModuleRoutes } from './http/module-routes.ts';
import type { JobRegistry } from './outbox/registry.ts';

/**
 * What every module's facade (`createX(deps)` in its index.ts) offers the composition besides its use
 * cases: its HTTP routes, and `registerJobs`, which subscribes its event handlers and schedules. The
 * composition (src/compose.ts) mounts the routes and calls registerJobs for the worker role; nothing is
 * registered as a side effect of constructing a module.
 */
export interface ModuleSurface {
  readonly name: string;
  readonly routes: ModuleRoutes[];
  registerJobs(jobs: JobRegistry): void;
}
