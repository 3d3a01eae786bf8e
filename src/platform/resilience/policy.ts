import {
  bulkhead as bulkheadPolicy,
  BrokenCircuitError,
  BulkheadRejectedError,
  circuitBreaker,
  CircuitState,
  ConsecutiveBreaker,
  ExponentialBackoff,
  handleWhen,
  noop,
  retry as retryPolicy,
  TaskCancelledError,
  timeout as timeoutPolicy,
  TimeoutStrategy,
  wrap,
  type IPolicy,
} from 'cockatiel';
import type { Logger } from 'pino';
import { circuitBreakerState } from '../observability/metrics.ts';

export { BrokenCircuitError, BulkheadRejectedError, CircuitState, TaskCancelledError };

export interface PolicyOptions {
  /** Names the breaker in logs and in `plinth_circuit_breaker_state{breaker}`. */
  name: string;
  /** Per attempt; 0 = no timeout. The call's AbortSignal fires when it elapses. */
  timeoutMs?: number;
  /** Extra attempts after the first, for transient errors only (see isTransient). */
  retries?: number;
  /** First backoff delay; later ones grow exponentially with decorrelated jitter. */
  retryInitialDelayMs?: number;
  retryMaxDelayMs?: number;
  /** Open after `threshold` consecutive failures; try again (half-open) after `halfOpenAfterMs`. */
  breaker?: { threshold: number; halfOpenAfterMs: number } | false;
  /** At most `limit` concurrent calls and `queue` waiting; more are rejected with BulkheadRejectedError. */
  bulkhead?: { limit: number; queue?: number } | false;
  /** Which errors are worth a retry and count against the breaker. Default: isTransientError. */
  isTransient?: (err: unknown) => boolean;
  logger?: Logger;
}

export interface ResiliencePolicy {
  readonly name: string;
  /** Runs fn under bulkhead → retry → breaker → timeout. fn gets an AbortSignal to cancel its I/O. */
  execute<T>(fn: (signal: AbortSignal) => Promise<T>): Promise<T>;
  breakerState(): 'closed' | 'open' | 'half-open' | 'isolated' | 'none';
}

const NETWORK_CODES = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'ETIMEDOUT',
  'EPIPE',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'EAI_AGAIN',
  'ENOTFOUND',
  'UND_ERR_CONNECT_TIMEOUT',
  'UND_ERR_SOCKET',
  'UND_ERR_HEADERS_TIMEOUT',
]);

/**
 * Transient = worth trying again later: network failures, timeouts, and upstream 408/429/5xx. A 4xx
 * (bad request, auth, not found) is the caller's mistake and is never retried nor counted by the breaker.
 */
export function isTransientError(err: unknown): boolean {
  if (err instanceof TaskCancelledError) return true;
  if (err instanceof BrokenCircuitError || err instanceof BulkheadRejectedError) return false;
  if (typeof err !== 'object' || err === null) return false;
  const e = err as { code?: unknown; status?: unknown; statusCode?: unknown; message?: unknown; name?: unknown };
  if (typeof e.code === 'string' && NETWORK_CODES.has(e.code)) return true;
  const status = typeof e.status === 'number' ? e.status : typeof e.statusCode === 'number' ? e.statusCode : undefined;
  if (status !== undefined) return status === 408 || status === 429 || status >= 500;
  if (e.name === 'AbortError' || e.name === 'TimeoutError') return true;
  // ioredis: "Connection is closed.", "Command timed out", "Stream isn't writeable and enableOfflineQueue…"
  const message = typeof e.message === 'string' ? e.message : '';
  return /connection is closed|command timed out|stream isn't writeable|connect etimedout|socket closed/i.test(message);
}

const STATE_VALUE: Record<CircuitState, number> = {
  [CircuitState.Closed]: 0,
  [CircuitState.Open]: 1,
  [CircuitState.HalfOpen]: 2,
  [CircuitState.Isolated]: 3,
};
const STATE_NAME: Record<CircuitState, 'closed' | 'open' | 'half-open' | 'isolated'> = {
  [CircuitState.Closed]: 'closed',
  [CircuitState.Open]: 'open',
  [CircuitState.HalfOpen]: 'half-open',
  [CircuitState.Isolated]: 'isolated',
};

/**
 * The one way to call an outbound dependency: timeout, retry with jittered exponential backoff for
 * transient errors only, circuit breaker, bulkhead. Breaker transitions are logged and exported as a gauge.
 */
export function createPolicy(opts: PolicyOptions): ResiliencePolicy {
  const transient = opts.isTransient ?? isTransientError;
  const handled = handleWhen((err) => transient(err));
  const layers: Array<IPolicy<any, any>> = [];
  if (opts.bulkhead) layers.push(bulkheadPolicy(opts.bulkhead.limit, opts.bulkhead.queue ?? 0));
  if (opts.retries && opts.retries > 0) {
    layers.push(
      retryPolicy(handled, {
        maxAttempts: opts.retries,
        backoff: new ExponentialBackoff({
          initialDelay: opts.retryInitialDelayMs ?? 100,
          maxDelay: opts.retryMaxDelayMs ?? 5_000,
        }),
      }),
    );
  }
  let breaker: ReturnType<typeof circuitBreaker> | undefined;
  if (opts.breaker) {
    breaker = circuitBreaker(handled, {
      halfOpenAfter: opts.breaker.halfOpenAfterMs,
      breaker: new ConsecutiveBreaker(opts.breaker.threshold),
    });
    const gauge = circuitBreakerState;
    gauge.set({ breaker: opts.name }, 0);
    const b = breaker;
    b.onStateChange((state) => {
      gauge.set({ breaker: opts.name }, STATE_VALUE[state]);
      const level = state === CircuitState.Open ? 'warn' : 'info';
      opts.logger?.[level]({ breaker: opts.name, state: STATE_NAME[state] }, `circuit breaker ${opts.name} ${STATE_NAME[state]}`);
    });
    layers.push(b);
  }
  if (opts.timeoutMs && opts.timeoutMs > 0) layers.push(timeoutPolicy(opts.timeoutMs, TimeoutStrategy.Aggressive));
  const policy = layers.length > 0 ? wrap(...layers) : noop;

  return {
    name: opts.name,
    // A signal per call: cockatiel otherwise hangs every concurrent call's abort listener on one shared
    // never-aborted signal (MaxListenersExceededWarning under load).
    execute: (fn) => policy.execute(({ signal }) => fn(signal), new AbortController().signal),
    breakerState: () => (breaker ? STATE_NAME[breaker.state] : 'none'),
  };
}

/**
 * Policies for the outbound dependencies, created once per process and shared (a breaker only works if
 * every caller of the dependency goes through the same one).
 * - redis: no retry (the caller has a fallback and a request must not wait), short timeout, quick breaker.
 * - smtp / payment / webhook: retried with backoff, bulkheaded so a slow provider cannot take every socket.
 *   Payment calls must carry the provider's own idempotency key before they may be retried.
 */
export interface OutboundPolicies {
  redis: ResiliencePolicy;
  smtp: ResiliencePolicy;
  payment: ResiliencePolicy;
  webhook: ResiliencePolicy;
}

export function createOutboundPolicies(logger?: Logger): OutboundPolicies {
  return {
    redis: createRedisPolicy(logger),
    smtp: createPolicy({ name: 'smtp', timeoutMs: 10_000, retries: 3, breaker: { threshold: 5, halfOpenAfterMs: 30_000 }, bulkhead: { limit: 10, queue: 100 }, logger }),
    payment: createPolicy({ name: 'payment', timeoutMs: 15_000, retries: 2, breaker: { threshold: 5, halfOpenAfterMs: 30_000 }, bulkhead: { limit: 20, queue: 50 }, logger }),
    webhook: createPolicy({ name: 'webhook', timeoutMs: 10_000, retries: 0, breaker: { threshold: 10, halfOpenAfterMs: 60_000 }, bulkhead: { limit: 50, queue: 500 }, logger }),
  };
}

export function createRedisPolicy(logger?: Logger, name = 'redis'): ResiliencePolicy {
  return createPolicy({ name, timeoutMs: 500, retries: 0, breaker: { threshold: 3, halfOpenAfterMs: 2_000 }, logger });
}
