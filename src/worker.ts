import type { Modules, Platform } from './main.ts';

/**
 * The worker role: every module's handlers and schedules (registered here, explicitly, from each module's
 * registerJobs), then the outbox relay, the sweeper and the schedules. Stopped gracefully by the
 * lifecycle's 'jobs' closer: active jobs finish, queued ones stay for another worker (Redis) or in
 * Postgres (embedded).
 */
export async function startWorker(platform: Platform, modules: Pick<Modules, 'registerJobs'>): Promise<void> {
  modules.registerJobs(platform.events);
  await platform.events.startWorker();
}
