import type { JobRegistry } from '../../platform/outbox/registry.ts';

/** Tenancy consumes no events and runs no schedules (it publishes tenancy.invitation_created). */
export function registerTenancyJobs(_jobs: JobRegistry): void {}
