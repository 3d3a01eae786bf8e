import type { JobRegistry } from '../../platform/outbox/registry.ts';

/** No handlers: expired login states and replay-guard rows are pruned per connection on each login start. */
export function registerSsoJobs(_jobs: JobRegistry): void {}
