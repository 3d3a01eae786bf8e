import type { JobRegistry } from '../../platform/outbox/registry.ts';

/**
 * Job handlers the projects module owns: none yet (it publishes events, it consumes none). Called by the
 * composition like every module's, so a handler added here is registered without touching the wiring.
 */
export function registerProjectsJobs(_jobs: JobRegistry): void {}
