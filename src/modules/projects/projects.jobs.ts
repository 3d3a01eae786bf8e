import type { JobRegistry } from '../../platform/outbox/registry.ts';
import { PROJECT_EVENTS, type CacheStaleEvent } from './projects.events.ts';
import type { UseCaseContext } from './use-cases/context.ts';

/**
 * The cache invalidation a change owes, retried until Redis takes it: the request invalidates at once
 * after commit, but when its process cannot reach Redis (a partition, a restart) this handler, on any
 * worker, lands it with the jobs' backoff. Versioned entries make a late or repeated one harmless.
 */
export function registerProjectsJobs(jobs: JobRegistry, context: Pick<UseCaseContext, 'invalidate'>): void {
  jobs.subscribe<CacheStaleEvent>(
    PROJECT_EVENTS.cacheStale,
    'projects.cache_invalidation',
    async ({ payload }) => {
      if (!(await context.invalidate(payload.tenantId, payload))) throw new Error('Redis unreachable: cache invalidation not landed yet');
    },
    { maxAttempts: 20, backoffBaseMs: 500, backoffMaxMs: 30_000 },
  );
}
