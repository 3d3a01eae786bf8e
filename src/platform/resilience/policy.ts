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
import { LRUCache } from 'lru-cache';
import type { Logger } from 'pino';
import { circuitBreakerState, outboundBreakersOpen } from '../observability/metrics.ts';

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
  /** Export the breaker state as a gauge labelled with `name` (off for per-destination breakers: unbounded labels). */
  metrics?: boolean;
  /** Extra fields on breaker-transition log lines (e.g. the destination). */
  logFields?: Record<string, unknown>;
  onBreakerStateChange?: (state: 'closed' | 'open' | 'half-open' | 'isolated') => void;
  /**
   * The timeout abandons the call (rejects with TaskCancelledError) without an AbortController per call:
   * fn's signal never fires. For clients that cannot cancel a call anyway (ioredis), on hot paths: the
   * per-call signal, timer and the DOMException cockatiel's timeout creates when it cleans up were a
   * measurable share of a cached request. Deadlines are checked by one timer, every timeoutMs / 10, so a
   * call is abandoned between timeoutMs and 1.1 × timeoutMs. Only without retries and bulkhead.
   */
  abandonOnTimeout?: boolean;
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
    const gauge = opts.metrics === false ? undefined : circuitBreakerState;
    gauge?.set({ breaker: opts.name }, 0);
    const b = breaker;
    b.onStateChange((state) => {
      gauge?.set({ breaker: opts.name }, STATE_VALUE[state]);
      const level = state === CircuitState.Open ? 'warn' : 'info';
      opts.logger?.[level]({ breaker: opts.name, state: STATE_NAME[state], ...opts.logFields }, `circuit breaker ${opts.name} ${STATE_NAME[state]}`);
      opts.onBreakerStateChange?.(STATE_NAME[state]);
    });
    layers.push(b);
  }
  if (opts.abandonOnTimeout && opts.timeoutMs && opts.timeoutMs > 0 && !opts.retries && !opts.bulkhead) {
    const deadline = createDeadlines(opts.timeoutMs);
    const b = breaker;
    return {
      name: opts.name,
      execute: b ? (fn) => b.execute(() => deadline(fn(NEVER_ABORTED))) : (fn) => deadline(fn(NEVER_ABORTED)),
      breakerState: () => (b ? STATE_NAME[b.state] : 'none'),
    };
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

/** Never aborted: no layer of the abandoning policy listens on it, so sharing it cannot pile up listeners. */
const NEVER_ABORTED = new AbortController().signal;

/**
 * Races calls against a deadline with one timer for all of them (running only while calls are pending)
 * instead of one timer and AbortController each.
 */
function createDeadlines(timeoutMs: number): <T>(call: Promise<T>) => Promise<T> {
  const pending = new Set<{ at: number; reject: (err: Error) => void }>();
  let timer: NodeJS.Timeout | undefined;
  const sweep = () => {
    const now = Date.now();
    for (const p of pending) {
      if (p.at <= now) {
        pending.delete(p);
        p.reject(new TaskCancelledError(`Operation timed out after ${timeoutMs}ms`));
      }
    }
    if (pending.size === 0 && timer) {
      clearInterval(timer);
      timer = undefined;
    }
  };
  return <T>(call: Promise<T>) =>
    new Promise<T>((resolve, reject) => {
      const entry = { at: Date.now() + timeoutMs, reject };
      pending.add(entry);
      timer ??= setInterval(sweep, Math.max(1, Math.round(timeoutMs / 10))).unref();
      call.then(
        (v) => {
          pending.delete(entry);
          resolve(v);
        },
        (err) => {
          pending.delete(entry);
          reject(err);
        },
      );
    });
}

/** Which outbound destination a call goes to, and for which tenant (for the per-tenant cap). */
export interface OutboundScope {
  /** e.g. a webhook endpoint URL, the SMTP relay, the payment gateway account. */
  destination: string;
  tenantId?: string | null;
}

/**
 * One breaker and bulkhead per destination, a cap on each tenant's concurrent calls, and a global
 * bulkhead over all of them: a tenant whose receiver fails opens only that receiver's breaker, and a
 * tenant with many slow receivers holds at most `perTenantLimit` of the process's `global` slots.
 */
export interface DestinationPolicy {
  readonly name: string;
  execute<T>(scope: OutboundScope, fn: (signal: AbortSignal) => Promise<T>): Promise<T>;
  breakerState(destination: string): ReturnType<ResiliencePolicy['breakerState']>;
  /** Destinations currently holding a policy (bounded by maxDestinations). */
  size(): number;
}

export interface DestinationPolicyOptions extends PolicyOptions {
  /** Concurrent calls per tenant across all its destinations; beyond it BulkheadRejectedError at once. */
  perTenantLimit: number;
  /** Concurrent calls in the process (+ queue), all destinations together. */
  global: { limit: number; queue: number };
  /** Per-destination policies kept (least recently used evicted: a tenant cannot grow the heap with URLs). */
  maxDestinations?: number;
}

export function createDestinationPolicy(opts: DestinationPolicyOptions): DestinationPolicy {
  const { perTenantLimit, global, maxDestinations = 10_000, ...base } = opts;
  const globalBulkhead = bulkheadPolicy(global.limit, global.queue);
  // Destinations whose breaker is not closed, exported as one gauge per policy (a label per destination would be unbounded).
  const notClosed = new Set<string>();
  const gauge = outboundBreakersOpen;
  gauge.set({ policy: opts.name }, 0);
  const policies = new LRUCache<string, ResiliencePolicy>({
    max: maxDestinations,
    dispose: (_p, destination) => {
      notClosed.delete(destination);
      gauge.set({ policy: opts.name }, notClosed.size);
    },
  });
  const inFlight = new Map<string, number>();
  const policyFor = (destination: string) => {
    let p = policies.get(destination);
    if (!p) {
      p = createPolicy({
        ...base,
        metrics: false,
        logFields: { destination },
        onBreakerStateChange: (state) => {
          if (state === 'closed') notClosed.delete(destination);
          else notClosed.add(destination);
          gauge.set({ policy: opts.name }, notClosed.size);
        },
      });
      policies.set(destination, p);
    }
    return p;
  };
  return {
    name: opts.name,
    async execute(scope, fn) {
      const tenant = scope.tenantId ?? '-';
      const current = inFlight.get(tenant) ?? 0;
      if (current >= perTenantLimit) throw new BulkheadRejectedError(perTenantLimit, 0);
      inFlight.set(tenant, current + 1);
      try {
        const policy = policyFor(scope.destination);
        return await globalBulkhead.execute(() => policy.execute(fn));
      } finally {
        const left = (inFlight.get(tenant) ?? 1) - 1;
        if (left <= 0) inFlight.delete(tenant);
        else inFlight.set(tenant, left);
      }
    },
    breakerState: (destination) => policies.peek(destination)?.breakerState() ?? 'closed',
    size: () => policies.size,
  };
}

/**
 * Policies for the outbound dependencies, created once per process and shared (a breaker only works if
 * every caller of the dependency goes through the same one).
 * - redis: no retry (the caller has a fallback and a request must not wait), short timeout, quick breaker.
 * - smtp / payment / webhook: per destination (see DestinationPolicy), retried with backoff where safe,
 *   bulkheaded so a slow provider cannot take every socket and one tenant cannot take every slot.
 *   Payment calls must carry the provider's own idempotency key before they may be retried.
 */
export interface OutboundPolicies {
  redis: ResiliencePolicy;
  smtp: DestinationPolicy;
  payment: DestinationPolicy;
  webhook: DestinationPolicy;
}

/** The figures README's security section documents. */
export const OUTBOUND_LIMITS = {
  webhook: { timeoutMs: 10_000, breaker: { threshold: 10, halfOpenAfterMs: 60_000 }, perDestination: { limit: 10, queue: 100 }, perTenantLimit: 10, global: { limit: 50, queue: 500 }, maxDestinations: 10_000 },
  smtp: { timeoutMs: 10_000, retries: 3, breaker: { threshold: 5, halfOpenAfterMs: 30_000 }, perDestination: { limit: 10, queue: 100 }, perTenantLimit: 5, global: { limit: 10, queue: 200 }, maxDestinations: 100 },
  payment: { timeoutMs: 15_000, retries: 2, breaker: { threshold: 5, halfOpenAfterMs: 30_000 }, perDestination: { limit: 20, queue: 50 }, perTenantLimit: 5, global: { limit: 20, queue: 100 }, maxDestinations: 1_000 },
} as const;

export function createOutboundPolicies(logger?: Logger): OutboundPolicies {
  const outbound = (name: keyof typeof OUTBOUND_LIMITS) => {
    const l = OUTBOUND_LIMITS[name];
    return createDestinationPolicy({
      name,
      timeoutMs: l.timeoutMs,
      retries: 'retries' in l ? l.retries : 0,
      breaker: l.breaker,
      bulkhead: l.perDestination,
      perTenantLimit: l.perTenantLimit,
      global: l.global,
      maxDestinations: l.maxDestinations,
      logger,
    });
  };
  return { redis: createRedisPolicy(logger), smtp: outbound('smtp'), payment: outbound('payment'), webhook: outbound('webhook') };
}
export function createRedisPolicy(logger?: Logger, name = 'redis'): ResiliencePolicy {
  return createPolicy({ name, timeoutMs: 500, retries: 0, breaker: { threshold: 3, halfOpenAfterMs: 2_000 }, logger, abandonOnTimeout: true });
}
