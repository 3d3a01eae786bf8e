import { registerTracing } from './tracing-config.ts';

/**
 * Preload entry for processes not started through `src/cli.ts` (which calls registerTracing itself):
 * `node --import tsx --import ./src/platform/observability/tracing-register.ts your-entry.ts`.
 */
await registerTracing();
