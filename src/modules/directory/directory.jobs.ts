import type { JobRegistry } from '../../platform/outbox/registry.ts';

/** SCIM provisioning is synchronous (the IdP retries); one schedule purges orgs whose deletion grace period ended. */
export function registerDirectoryJobs(jobs: JobRegistry, purgeDue: () => Promise<Array<{ orgId: string; rowsDeleted: number }>>): void {
  jobs.schedule('directory.org_purge', { everyMs: 10 * 60_000 }, async ({ logger }) => {
    const purged = await purgeDue();
    if (purged.length > 0) logger.info({ purged }, 'organizations purged');
  });
}
