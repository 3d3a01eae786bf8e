import type { JobRegistry } from '../../platform/outbox/registry.ts';

/** Identity consumes no events and runs no schedules (expired login attempts are swept inline). */
export function registerIdentityJobs(_jobs: JobRegistry): void {}
