import { register } from 'node:module';

type Env = Record<string, string | undefined>;

export function envList(env: Env, name: string): string[] {
  return (env[name] ?? '')
    .split(',')
    .map((s) => s.trim().toLowerCase())
    .filter(Boolean);
}

/**
 * Tracing is on only when the standard variables ask for it: an OTLP endpoint
 * (`OTEL_EXPORTER_OTLP_ENDPOINT` / `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) or `OTEL_TRACES_EXPORTER=otlp|console`;
 * `OTEL_SDK_DISABLED=true` or `OTEL_TRACES_EXPORTER=none` turn it off. Unset ⇒ the SDK is never loaded.
 */
export function tracingConfigured(env: Env): boolean {
  if ((env.OTEL_SDK_DISABLED ?? '').trim().toLowerCase() === 'true') return false;
  const exporters = envList(env, 'OTEL_TRACES_EXPORTER');
  if (exporters.includes('none')) return false;
  if (exporters.length > 0) return true;
  return Boolean(env.OTEL_EXPORTER_OTLP_ENDPOINT?.trim() || env.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT?.trim());
}

/**
 * Starts tracing before any instrumented module (http, fastify, pg, ioredis) is loaded — patching only
 * applies to modules loaded afterwards, so `src/cli.ts` awaits this first and only then imports the
 * composition root dynamically. This file itself imports nothing heavy: when no OTEL_* variable asks
 * for tracing nothing is loaded — no SDK, no loader hook, no overhead.
 */
export async function registerTracing(env: Env = process.env): Promise<boolean> {
  if (!tracingConfigured(env)) return false;
  // pg and ioredis are imported from our ES modules, so they are patched through import-in-the-middle's
  // loader hook (CommonJS requires through require-in-the-middle); the message channel limits the hook
  // to the modules the instrumentations name.
  const { createAddHookMessageChannel } = await import('import-in-the-middle');
  const { registerOptions, waitForAllMessagesAcknowledged } = createAddHookMessageChannel();
  register('import-in-the-middle/hook.mjs', import.meta.url, registerOptions);
  const { startTracing } = await import('./tracing-sdk.ts');
  startTracing({ env, exporterNames: envList(env, 'OTEL_TRACES_EXPORTER') });
  await waitForAllMessagesAcknowledged();
  return true;
}
