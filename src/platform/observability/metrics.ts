// Over 300 lines on purpose: the one place every Prometheus metric is declared, so none is declared twice.
import client from 'prom-client';

/**
 * Every Prometheus metric Plinth exposes is declared here, once, on prom-client's default registry, so
 * any platform piece or module imports the metric object instead of re-declaring it (a second
 * declaration of the same name throws at start-up).
 *
 * Labels are low cardinality by rule: route templates (never raw URLs), status classes, queue/cache/
 * breaker/scope names chosen in code. Never an id, a tenant, a user or anything taken from a request.
 */
export const registry = client.register;

/** Seconds. HTTP answers are mostly sub-100 ms; the tail buckets catch timeouts. */
const HTTP_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];
const QUERY_BUCKETS = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5];
const JOB_BUCKETS = [0.01, 0.05, 0.1, 0.5, 1, 5, 15, 60, 300];

interface Series {
  labels: Record<string, string>;
  /** Per-bucket (not cumulative) counts; cumulated at scrape time. */
  counts: Float64Array;
  sum: number;
  count: number;
}

/**
 * A histogram for hot paths, exported exactly like a prom-client Histogram. prom-client's `observe`
 * hashes a label object on every call (~1 µs); here the caller finds its series by a key it already
 * holds (no allocation), and observing is a bucket search and three additions.
 */
export function createFastHistogram(opts: { name: string; help: string; buckets: number[] }) {
  const { name, help, buckets } = opts;
  const all = new Set<Series>();
  const metric = {
    name,
    help,
    type: 'histogram' as const,
    aggregator: 'sum' as const,
    async get() {
      const values: Array<{ metricName: string; labels: Record<string, string | number>; value: number }> = [];
      for (const s of all) {
        let acc = 0;
        for (let i = 0; i < buckets.length; i++) {
          acc += s.counts[i]!;
          values.push({ metricName: `${name}_bucket`, labels: { ...s.labels, le: buckets[i]! }, value: acc });
        }
        values.push(
          { metricName: `${name}_bucket`, labels: { ...s.labels, le: '+Inf' }, value: s.count },
          { metricName: `${name}_sum`, labels: s.labels, value: s.sum },
          { metricName: `${name}_count`, labels: s.labels, value: s.count },
        );
      }
      return { name, help, type: 'histogram' as const, values, aggregator: 'sum' as const };
    },
    reset() {
      for (const s of all) {
        s.counts.fill(0);
        s.sum = 0;
        s.count = 0;
      }
    },
  };
  registry.registerMetric(metric as unknown as client.Metric);
  return {
    name,
    /** A new series for these labels; keep it and call observe(series, value). */
    series(labels: Record<string, string>): Series {
      const s: Series = { labels, counts: new Float64Array(buckets.length), sum: 0, count: 0 };
      all.add(s);
      return s;
    },
    observe(s: Series, value: number): void {
      let i = 0;
      while (i < buckets.length && value > buckets[i]!) i++;
      if (i < buckets.length) s.counts[i]! += 1;
      s.sum += value;
      s.count += 1;
    },
  };
}

const httpRequestDuration = createFastHistogram({
  name: 'plinth_http_request_duration_seconds',
  help: 'HTTP request duration by method, route template and status class',
  buckets: HTTP_BUCKETS,
});

const HTTP_METHODS = ['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS', 'OTHER'];
const STATUS_CLASSES = ['1xx', '2xx', '3xx', '4xx', '5xx'];
/** route template → series slots by method × status class, created on first use. */
const httpSeries = new Map<string, Array<Series | undefined>>();

/** Hot path: two array/map lookups and an observe; `route` is the template (`unmatched` for 404). */
export function observeHttpRequest(method: string, route: string, status: number, seconds: number): void {
  let m = HTTP_METHODS.indexOf(method);
  if (m === -1) m = HTTP_METHODS.length - 1;
  const c = status < 200 ? 0 : status >= 500 ? 4 : Math.floor(status / 100) - 1;
  let slots = httpSeries.get(route);
  if (!slots) {
    slots = new Array(HTTP_METHODS.length * STATUS_CLASSES.length);
    httpSeries.set(route, slots);
  }
  const idx = m * STATUS_CLASSES.length + c;
  let s = slots[idx];
  if (!s) {
    s = httpRequestDuration.series({ method: HTTP_METHODS[m]!, route, status_class: STATUS_CLASSES[c]! });
    slots[idx] = s;
  }
  httpRequestDuration.observe(s, seconds);
}

export const httpRequestsInFlight = new client.Gauge({
  name: 'plinth_http_requests_in_flight',
  help: 'HTTP requests currently being served',
});

const dbQueryDuration = createFastHistogram({
  name: 'plinth_db_query_duration_seconds',
  help: 'Database query duration by statement kind',
  buckets: QUERY_BUCKETS,
});
const querySeries = new Map<string, Series>();

/** `operation` is a closed set (query-observer.ts sqlOperation). */
export function observeQuery(operation: string, seconds: number): void {
  let s = querySeries.get(operation);
  if (!s) {
    s = dbQueryDuration.series({ operation });
    querySeries.set(operation, s);
  }
  dbQueryDuration.observe(s, seconds);
}

export const dbSlowQueries = new client.Counter({
  name: 'plinth_db_slow_queries_total',
  help: 'Queries slower than SLOW_QUERY_MS, by statement kind',
  labelNames: ['operation'] as const,
});

/** For the cache helper (edge): `cacheRequests.inc({ cache: 'sessions', result: 'hit' })`. */
export const cacheRequests = new client.Counter({
  name: 'plinth_cache_requests_total',
  help: 'Cache lookups by cache and result (hit = L1 or Redis, miss = loader ran)',
  labelNames: ['cache', 'result'] as const,
});

/** Incremented by the rate limiter (edge) on every 429: `rateLimitRejections.inc({ scope: 'ip' })`. */
export const rateLimitRejections = new client.Counter({
  name: 'plinth_rate_limit_rejections_total',
  help: 'Requests rejected by a rate limit, by limit scope',
  labelNames: ['scope'] as const,
});

/** Per-destination policies (webhooks, mail, payments): how many destinations' breakers are not closed. */
export const outboundBreakersOpen = new client.Gauge({
  name: 'plinth_outbound_breakers_open',
  help: 'Destinations whose circuit breaker is open or half-open, per outbound policy',
  labelNames: ['policy'] as const,
});

/** Breaker state by breaker name; values in the order of cockatiel's CircuitState. */
export const circuitBreakerState = new client.Gauge({
  name: 'plinth_circuit_breaker_state',
  help: 'Circuit breaker state: 0 closed, 1 open, 2 half-open, 3 isolated',
  labelNames: ['breaker'] as const,
});

const jobDuration = new client.Histogram({
  name: 'plinth_job_duration_seconds',
  help: 'Job processing duration by queue and outcome (success or failure)',
  labelNames: ['queue', 'outcome'] as const,
  buckets: JOB_BUCKETS,
});

/** Called by the job runner after each attempt. */
export function observeJob(queue: string, outcome: 'success' | 'failure', seconds: number): void {
  jobDuration.observe({ queue, outcome }, seconds);
}

export const readinessStatus = new client.Gauge({
  name: 'plinth_readiness_status',
  help: 'Outcome of the last /readyz probe: 1 ready, 0 not ready',
});

export const readinessTransitions = new client.Counter({
  name: 'plinth_readiness_transitions_total',
  help: 'Times /readyz changed between ready and not ready',
});

/**
 * Gauges whose values come from sources registered at run time (the pool of each open database, the
 * outbox, the queues). Each registration returns an unregister function for shutdown, so a closed
 * platform (or a finished test) stops being scraped. Several sources are summed (pools) or merged.
 */
function sourceSet<T>() {
  const sources = new Set<T>();
  return {
    sources,
    add(source: T): () => void {
      sources.add(source);
      return () => void sources.delete(source);
    },
  };
}

export interface PoolSource {
  poolStats(): { total: number; idle: number; waiting: number };
}
const pools = sourceSet<PoolSource>();

// Registers itself; its collect() reads the registered sources at scrape time.
new client.Gauge({
  name: 'plinth_db_pool_connections',
  help: 'Database pool connections by state (in_use, idle)',
  labelNames: ['state'] as const,
  collect() {
    if (pools.sources.size === 0) return;
    let total = 0;
    let idle = 0;
    for (const p of pools.sources) {
      const s = p.poolStats();
      total += s.total;
      idle += s.idle;
    }
    this.set({ state: 'in_use' }, total - idle);
    this.set({ state: 'idle' }, idle);
  },
});

// Registers itself; its collect() reads the registered sources at scrape time.
new client.Gauge({
  name: 'plinth_db_pool_waiting_requests',
  help: 'Queries waiting for a free database pool connection',
  collect() {
    if (pools.sources.size === 0) return;
    let waiting = 0;
    for (const p of pools.sources) waiting += p.poolStats().waiting;
    this.set(waiting);
  },
});

export function registerPoolMetrics(db: PoolSource): () => void {
  return pools.add(db);
}

/** The adaptive concurrency limit of each HTTP app in this process (src/platform/http/concurrency-limit.ts). */
export interface ConcurrencyLimitSource {
  limit(): number;
  inFlight(): number;
}
const concurrencyLimits = sourceSet<ConcurrencyLimitSource>();

// Both register themselves; collect() sums the registered sources at scrape time.
for (const [name, help, read] of [
  ['plinth_http_concurrency_limit', 'Current adaptive limit on HTTP requests served at once by this process', (s) => s.limit()],
  ['plinth_http_concurrency_limit_in_flight', 'HTTP requests currently admitted by the adaptive concurrency limit', (s) => s.inFlight()],
] as Array<[string, string, (s: ConcurrencyLimitSource) => number]>) {
  new client.Gauge({
    name,
    help,
    collect() {
      if (concurrencyLimits.sources.size === 0) return;
      let sum = 0;
      for (const s of concurrencyLimits.sources) sum += read(s);
      this.set(sum);
    },
  });
}

/** Incremented on every request the adaptive concurrency limit refuses (503 HTTP.OVERLOADED). */
export const httpRequestsShed = new client.Counter({
  name: 'plinth_http_requests_shed_total',
  help: 'HTTP requests refused by the adaptive concurrency limit (503 with Retry-After)',
});

export function registerConcurrencyLimitMetrics(source: ConcurrencyLimitSource): () => void {
  return concurrencyLimits.add(source);
}

export interface OutboxStats {
  /** Rows not yet processed (pending relay or in flight). */
  backlog: number;
  /** Age of the oldest unprocessed row; 0 when the backlog is empty. */
  oldestAgeSeconds: number;
}
type OutboxSource = () => Promise<OutboxStats>;
const outboxes = sourceSet<OutboxSource>();
let outboxSnapshot: Promise<OutboxStats | undefined> | undefined;

/** One query per scrape for both outbox gauges (whichever collects first starts it). */
function outboxStats(): Promise<OutboxStats | undefined> {
  outboxSnapshot ??= (async () => {
    try {
      let backlog = 0;
      let oldest = 0;
      for (const source of outboxes.sources) {
        const s = await source();
        backlog += s.backlog;
        oldest = Math.max(oldest, s.oldestAgeSeconds);
      }
      return outboxes.sources.size > 0 ? { backlog, oldestAgeSeconds: oldest } : undefined;
    } catch {
      // A scrape must not fail because the database is down; the gauges keep their last value.
      return undefined;
    } finally {
      setImmediate(() => (outboxSnapshot = undefined));
    }
  })();
  return outboxSnapshot;
}

// Registers itself; its collect() reads the registered sources at scrape time.
new client.Gauge({
  name: 'plinth_outbox_backlog',
  help: 'Outbox rows not yet processed',
  async collect() {
    const s = await outboxStats();
    if (s) this.set(s.backlog);
  },
});

// Registers itself; its collect() reads the registered sources at scrape time.
new client.Gauge({
  name: 'plinth_outbox_oldest_age_seconds',
  help: 'Age of the oldest unprocessed outbox row (0 when empty)',
  async collect() {
    const s = await outboxStats();
    if (s) this.set(s.oldestAgeSeconds);
  },
});

/** The outbox (async) registers how to measure itself; called on each scrape. */
export function registerOutboxMetrics(source: OutboxSource): () => void {
  return outboxes.add(source);
}

export interface AuditBacklog {
  /** Committed audit events not yet sequenced into their chain. */
  pending: number;
  /** Age of the oldest of them; 0 when none. */
  oldestAgeSeconds: number;
}
type AuditSource = () => Promise<AuditBacklog>;
const auditSources = sourceSet<AuditSource>();
let auditSnapshot: Promise<AuditBacklog | undefined> | undefined;

/**
 * The audit sequencer's backlog, summed over the registered sources: one query per scrape for both
 * gauges (shared until the next macrotask); undefined when every source fails, so the gauges keep their
 * last value.
 */
function auditBacklog(): Promise<AuditBacklog | undefined> {
  // A failing source (a closed database) is left out rather than blanking the gauges.
  auditSnapshot ??= Promise.allSettled([...auditSources.sources].map((source) => source()))
    .then((settled) => {
      const all = settled.flatMap((r) => (r.status === 'fulfilled' ? [r.value] : []));
      if (all.length === 0) return undefined;
      return { pending: all.reduce((n, b) => n + b.pending, 0), oldestAgeSeconds: Math.max(0, ...all.map((b) => b.oldestAgeSeconds)) };
    })
    .finally(() => setImmediate(() => (auditSnapshot = undefined)));
  return auditSnapshot;
}

for (const [name, help, field] of [
  ['plinth_audit_backlog', 'Committed audit events not yet sequenced into their hash chain', 'pending'],
  ['plinth_audit_backlog_oldest_age_seconds', 'Age of the oldest audit event not yet sequenced (0 when none)', 'oldestAgeSeconds'],
] as const) {
  // Registers itself; its collect() reads the registered sources at scrape time.
  new client.Gauge({
    name,
    help,
    async collect() {
      const b = await auditBacklog();
      if (b) this.set(b[field]);
    },
  });
}

/** The audit module registers how to measure its sequencer backlog; called on each scrape. */
export function registerAuditMetrics(source: AuditSource): () => void {
  return auditSources.add(source);
}

export interface JobCount {
  queue: string;
  /** waiting, active, delayed, completed, failed, dead (dead-lettered) … */
  state: string;
  count: number;
}
type JobSource = () => Promise<JobCount[]>;
const jobSources = sourceSet<JobSource>();

// Registers itself; its collect() reads the registered sources at scrape time.
new client.Gauge({
  name: 'plinth_jobs',
  help: 'Jobs by queue and state (dead = dead-lettered)',
  labelNames: ['queue', 'state'] as const,
  async collect() {
    if (jobSources.sources.size === 0) return;
    try {
      const all = (await Promise.all([...jobSources.sources].map((s) => s()))).flat();
      this.reset();
      for (const c of all) this.inc({ queue: c.queue, state: c.state }, c.count);
    } catch {
      // keep the last values rather than failing the scrape
    }
  },
});

/** The job system (async) registers how to count jobs by state; called on each scrape. */
export function registerJobMetrics(source: JobSource): () => void {
  return jobSources.add(source);
}

let defaultsStarted = false;

/** Process metrics from prom-client: event-loop delay, memory, heap, GC, CPU, handles. Once per process. */
export function startDefaultMetrics(): void {
  if (defaultsStarted) return;
  defaultsStarted = true;
  client.collectDefaultMetrics({ register: registry, eventLoopMonitoringPrecision: 20 });
  // Gauges named like counters fail `promtool check metrics`; handle counts say little a dashboard needs.
  for (const name of ['nodejs_active_handles_total', 'nodejs_active_requests_total', 'nodejs_active_resources_total']) {
    registry.removeSingleMetric(name);
  }
}

export const METRICS_CONTENT_TYPE = registry.contentType;

export function scrape(): Promise<string> {
  return registry.metrics();
}

/** Calls of operations declared deprecated (RFC 9745), by route: retire them when this stays at zero. */
export const deprecatedRequests = new client.Counter({
  name: 'plinth_deprecated_requests_total',
  help: 'Requests to deprecated operations, by method and route template',
  labelNames: ['method', 'route'] as const,
});
/** Replica routing (platform/db/replica-router.ts): lag per replica (label = replica index r0, r1, …). */
export const dbReplicaLag = new client.Gauge({
  name: 'plinth_db_replica_lag_seconds',
  help: 'Replication lag of each read replica as last measured (-1 when unreachable)',
  labelNames: ['replica'],
});
export const dbReplicaInRotation = new client.Gauge({
  name: 'plinth_db_replica_in_rotation',
  help: '1 when the replica serves reads, 0 when taken out (down or lagging beyond DATABASE_REPLICA_MAX_LAG_MS)',
  labelNames: ['replica'],
});
export const dbReads = new client.Counter({
  name: 'plinth_db_reads_total',
  help: 'Read transactions (withTenantRead and read-only exports) by target',
  labelNames: ['target'],
});
export const dbReadFallbacks = new client.Counter({
  name: 'plinth_db_read_fallbacks_total',
  help: 'Reads sent to the primary although replicas are configured, by reason',
  labelNames: ['reason'],
});
/** The replica router's view of the four above (passed to openDatabase by the composition). */
export const replicaRoutingMetrics = { lag: dbReplicaLag, inRotation: dbReplicaInRotation, reads: dbReads, fallbacks: dbReadFallbacks };
