import type { LifecycleState } from '../lifecycle.ts';
import type { App } from './server.ts';
import { sendProblem } from './errors.ts';

export type HealthCheck = () => Promise<void>;

export interface HealthOptions {
  lifecycle: LifecycleState;
  /** Required dependencies: any failure makes the instance unready. */
  checks: Record<string, HealthCheck>;
  /** Optional dependencies: a failure is reported as degraded but the instance stays ready. */
  optionalChecks?: Record<string, HealthCheck>;
  timeoutMs?: number;
}

async function probe(check: HealthCheck, timeoutMs: number): Promise<'ok' | 'down'> {
  let timer: NodeJS.Timeout | undefined;
  try {
    await Promise.race([
      check(),
      new Promise((_, reject) => {
        timer = setTimeout(() => reject(new Error('timeout')), timeoutMs);
      }),
    ]);
    return 'ok';
  } catch {
    return 'down';
  } finally {
    clearTimeout(timer);
  }
}

/** /livez answers from the process alone; /readyz asks each dependency, bounded by a timeout. */
export function registerHealthRoutes(app: App, opts: HealthOptions): void {
  const timeoutMs = opts.timeoutMs ?? 1_000;
  const hide = { hide: true };

  app.get('/livez', { schema: hide, config: { public: true } }, async () => ({ status: 'ok' }));

  app.get('/readyz', { schema: hide, config: { public: true } }, async (_request, reply) => {
    const names = [...Object.keys(opts.checks), ...Object.keys(opts.optionalChecks ?? {})];
    const all = { ...opts.checks, ...(opts.optionalChecks ?? {}) };
    const results = await Promise.all(names.map((n) => probe(all[n]!, timeoutMs)));
    const checks = Object.fromEntries(names.map((n, i) => [n, results[i]!]));
    const requiredDown = Object.keys(opts.checks).filter((n) => checks[n] !== 'ok');
    const degraded = Object.keys(opts.optionalChecks ?? {}).filter((n) => checks[n] !== 'ok');
    if (opts.lifecycle.draining) {
      reply.header('retry-after', '5');
      return sendProblem(reply, 503, 'HEALTH.DRAINING', 'This instance is shutting down', { checks });
    }
    if (requiredDown.length > 0) {
      reply.header('retry-after', '5');
      return sendProblem(reply, 503, 'HEALTH.DEPENDENCY_DOWN', `Unreachable: ${requiredDown.join(', ')}`, { checks });
    }
    return { status: degraded.length > 0 ? 'degraded' : 'ok', checks };
  });
}
