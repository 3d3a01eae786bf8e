import type { JobRegistry } from '../../platform/outbox/registry.ts';

/** Directory consumes no events and runs no schedules: provisioning is synchronous (the IdP retries). */
export function registerDirectoryJobs(_jobs: JobRegistry): void {}
