import type { JobRegistry } from '../../platform/outbox/registry.ts';

/** Audit consumes no events and runs no schedules: records are written in the caller's transaction. */
export function registerAuditJobs(_jobs: JobRegistry): void {}
