import type { App } from './server.ts';
import { sendProblem } from './errors.ts';

/** Probes must answer even when the process is saturated, or the orchestrator would restart a busy pod. */
const EXEMPT = new Set(['/livez', '/readyz', '/metrics']);

/**
 * Admission control: at most `max` requests in flight per process; the next one is answered at once with
 * 503 + Retry-After instead of queueing behind the others (where its latency, and everyone's, would grow
 * without bound). Event-loop-delay shedding (under-pressure) misses this case: a process waiting on its
 * database pool is slow but its event loop is idle. `max` 0 turns it off.
 */
export function registerInFlightLimit(app: App, opts: { max: number; retryAfterSec: number }): { inFlight(): number } {
  let inFlight = 0;
  if (opts.max <= 0) return { inFlight: () => inFlight };
  app.addHook('onRequest', async (request, reply) => {
    if (EXEMPT.has(request.url.split('?')[0] ?? '')) return;
    if (inFlight >= opts.max) {
      reply.header('retry-after', String(opts.retryAfterSec));
      return sendProblem(reply, 503, 'HTTP.OVERLOADED', 'Too many requests in progress on this instance; retry after the Retry-After delay');
    }
    inFlight += 1;
    // 'close' fires once per response, whether it finished or the client went away.
    reply.raw.once('close', () => {
      inFlight -= 1;
    });
  });
  return { inFlight: () => inFlight };
}
