import { createModules, type Modules, type Platform } from './main.ts';

/**
 * The worker role: every module's handlers (subscribed in createModules from its <module>.jobs.ts), the
 * outbox relay, the sweeper and the schedules. Stopped gracefully by the lifecycle's 'jobs' closer:
 * active jobs finish, queued ones stay for another worker (Redis) or in Postgres (embedded).
 */
export async function startWorker(platform: Platform, modules: Modules = createModules(platform)): Promise<Modules> {
  await platform.events.startWorker();
  return modules;
}
