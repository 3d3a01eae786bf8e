import { createHmac } from 'node:crypto';
import path from 'node:path';

/**
 * All configuration, read once from the environment and validated before anything starts.
 * A bad value throws ConfigError whose message is one line naming the variable.
 */
export interface Config {
  nodeEnv: 'development' | 'production' | 'test';
  role: 'all' | 'api' | 'worker';
  port: number;
  host: string;
  dataDir: string;
  databaseUrl: string | undefined;
  /** Optional separate login for the app role (no owner, no BYPASSRLS); recommended with PgBouncer. */
  databaseAppUrl: string | undefined;
  databaseReplicaUrls: string[];
  /** A replica further behind than this is taken out of read rotation until it catches up. */
  databaseReplicaMaxLagMs: number;
  databasePoolMax: number;
  /** How long a migration waits for a table lock before it fails (and the job retries). */
  migrationLockTimeoutMs: number;
  redisUrl: string | undefined;
  /** Prefix for every Redis key Plinth writes, so several deployments (or test runs) can share one Redis. */
  redisPrefix: string;
  logLevel: 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace' | 'silent';
  shutdownGraceMs: number;
  /** Time between readiness flipping to 503 and the listener closing, so load balancers stop routing first. */
  shutdownDelayMs: number;
  bodyLimitBytes: number;
  requestTimeoutMs: number;
  slowQueryMs: number;
  trustProxy: boolean;
  /** When set, GET /metrics requires `Authorization: Bearer <METRICS_TOKEN>`. */
  metricsToken: string | undefined;
  /** Worker role: serve GET /metrics on this port (the API serves it on its own port). */
  metricsPort: number | undefined;
  /**
   * Worker role (`plinth worker`): its CPU priority (nice 0–19, higher yields more; default 10). Where the
   * worker shares cores with an API (one VM, compose), batch work — invoice runs, exports, fan-out — then takes
   * the CPU the API leaves instead of queueing requests behind it, and runs slower while the API is busy; with
   * cores of its own (a Kubernetes pod) it changes nothing. `plinth start` (both roles in one process) never lowers it.
   */
  workerNice: number;
  /** Webhooks and e-mail (src/modules/notifications/README.md). */
  notifications: NotificationsConfig;
  /** File storage port and exports/reports (src/modules/reporting/README.md). */
  reporting: ReportingConfig;
  /** Edge protection (issue 5): rate limits, idempotency, backpressure, cache. See README "Edge protection". */
  edge: EdgeConfig;
  /** Payments and dunning (billing, issue #14; src/modules/billing/README.md). */
  payments: PaymentsConfig;
  /** Apply pending migrations when a process starts (advisory-locked); off when a separate migrate job runs them. */
  migrateOnStart: boolean;
  /** Jobs: handler concurrency per consumer per worker process. */
  jobsConcurrency: number;
  /** Jobs: longest a bulk run (the invoice run) may hold `background` consumers back in one episode; 0 = never. */
  jobsBackgroundHoldMaxMs: number;
  /** Jobs: how often the outbox relay polls when it is not nudged. */
  jobsPollMs: number;
  /** Jobs: the relay's safety poll when Postgres NOTIFY wakes it (every commit that adds an event does). */
  jobsIdlePollMs: number;
  /** Jobs: a delivery relayed but not processed this long is re-dispatched by the sweeper. */
  jobsSweepAfterMs: number;
  /** Jobs (BullMQ): lock duration and stalled check — how soon a job of a killed worker runs again. */
  jobsStalledMs: number;
  /** A consumer seen for the first time also gets the events of its name that occurred this long before (rolling deploys). */
  jobsConsumerBackfillMs: number;
  /** A consumer no running worker has declared for this long gets no new deliveries (it was removed from the code). */
  jobsConsumerRetireMs: number;
  /** Payment gateways (src/modules/billing/README.md, "Payment gateways"): keys, webhook secrets, timeouts. */
  paymentGateways: PaymentGatewaysConfig;
  /** WebAuthn / passkeys (identity): the relying party and the origins assertions may come from. */
  webauthn: WebAuthnConfig;
  /** Login throttling: processed failed logins per sliding hour before 429 (identity). */
  loginThrottle: { perAccountPerHour: number; perIpPerHour: number; perAccountIpPerHour: number; delayAfter: number; maxDelaySec: number };
}

export interface NotificationsConfig {
  /** 32-byte key (base64 or hex) that encrypts webhook signing secrets at rest; the dev default is refused in production. */
  webhookSecretKey: Buffer;
  /** https only and no private/loopback/link-local targets: always in production; WEBHOOK_STRICT_URLS=true elsewhere. */
  webhookStrictUrls: boolean;
  /** Per delivery attempt (inside platform.policies.webhook). */
  webhookTimeoutMs: number;
  /** Durable attempts (jobs layer) before a delivery is dead-lettered. */
  webhookMaxAttempts: number;
  webhookBackoffBaseMs: number;
  webhookBackoffMaxMs: number;
  /** An endpoint is deactivated after this many consecutive failed deliveries. */
  webhookDisableAfter: number;
  /** `smtp://` / `smtps://` URL; unset = mails are logged and kept in memory (embedded default). */
  smtpUrl: string | undefined;
  mailFrom: string;
  /** Base of links in e-mails (e.g. the invitation accept link). */
  publicUrl: string;
}

/**
 * The payment gateways' credentials. Secrets live only here and in the adapters: never logged (the logger
 * redacts `secret`/`key`-named fields too) and never echoed by an error.
 */
export interface PaymentGatewaysConfig {
  /** `sk_…`/`rk_…`; unset = the stripe adapter is not available (the sandbox is). */
  stripeSecretKey: string | undefined;
  /** `whsec_…` of the Stripe webhook endpoint; unset = Stripe webhooks answer 404. */
  stripeWebhookSecret: string | undefined;
  /** Base URL of the Stripe API for tests and local emulators (http(s)://host:port); unset = api.stripe.com. */
  stripeApiBase: string | undefined;
  /** Per-request socket timeout of the Stripe SDK (the payment policy's timeout is the outer bound). */
  stripeTimeoutMs: number;
  /** HMAC key of the sandbox gateway's webhooks (same `t=…,v1=…` header as Stripe's); derived from WEBHOOK_SECRET_KEY when unset. */
  sandboxWebhookSecret: string;
  /** A signed webhook older (or newer) than this many seconds is refused (replay window). */
  webhookToleranceSec: number;
}

/** WebAuthn relying party (src/modules/identity/README.md, "Passkeys"). */
export interface WebAuthnConfig {
  /** WEBAUTHN_RP_ID: the domain credentials are scoped to (default: PUBLIC_URL's host name). */
  rpId: string;
  /** WEBAUTHN_RP_NAME: shown by the authenticator (default `Plinth`). */
  rpName: string;
  /** WEBAUTHN_ORIGINS: comma-separated origins the browser may report (default: PUBLIC_URL's origin); each host is the RP id or a subdomain of it. */
  origins: string[];
}

/** The RP id must be the origin's host or a parent domain of it; explicit origins are https in production (except localhost). */
function webauthnConfig(env: Env, publicUrl: string, production: boolean): WebAuthnConfig {
  const explicitRpId = str(env, 'WEBAUTHN_RP_ID');
  const rpId = (explicitRpId ?? new URL(publicUrl).hostname).toLowerCase();
  if (explicitRpId !== undefined && (!/^[a-z0-9.-]{1,253}$/.test(rpId) || rpId.startsWith('.') || rpId.endsWith('.'))) throw new ConfigError('WEBAUTHN_RP_ID', `must be a host name like example.com (got "${rpId}")`);
  const raw = str(env, 'WEBAUTHN_ORIGINS');
  const origins = (raw === undefined ? [new URL(publicUrl).origin] : raw.split(',').map((o) => o.trim()).filter(Boolean)).map((o) => {
    let u: URL;
    try {
      u = new URL(checkUrl('WEBAUTHN_ORIGINS', o, ['https:', 'http:']));
    } catch (err) {
      if (err instanceof ConfigError) throw err;
      throw new ConfigError('WEBAUTHN_ORIGINS', `must be origins like https://app.example.com (got "${o}")`);
    }
    if (u.origin !== o.replace(/\/+$/, '')) throw new ConfigError('WEBAUTHN_ORIGINS', `must be bare origins (scheme, host, port; no path): got "${o}"`);
    const local = u.hostname === 'localhost' || u.hostname.endsWith('.localhost');
    // Checked for explicit origins only: a default derived from an http PUBLIC_URL must not stop a deployment
    // that does not use passkeys (browsers refuse WebAuthn there anyway).
    if (u.protocol === 'http:' && production && !local && raw !== undefined) throw new ConfigError('WEBAUTHN_ORIGINS', `must be https in production (got "${o}")`);
    if (u.hostname !== rpId && !u.hostname.endsWith(`.${rpId}`)) throw new ConfigError('WEBAUTHN_ORIGINS', `host ${u.hostname} is not ${rpId} or a subdomain of it (WEBAUTHN_RP_ID)`);
    return u.origin;
  });
  if (origins.length === 0 || origins.length > 20) throw new ConfigError('WEBAUTHN_ORIGINS', 'must list 1 to 20 origins');
  return { rpId, rpName: (str(env, 'WEBAUTHN_RP_NAME') ?? 'Plinth').slice(0, 64), origins };
}

/** Only for development and tests: production refuses it (see loadConfig). */
export const DEV_WEBHOOK_SECRET_KEY = 'ZGV2LW9ubHktd2ViaG9vay1rZXktcGxpbnRoLTMyYiE=';

function secretKey(env: Env, production: boolean): Buffer {
  const raw = str(env, 'WEBHOOK_SECRET_KEY');
  if (raw === undefined || raw === DEV_WEBHOOK_SECRET_KEY) {
    if (production) throw new ConfigError('WEBHOOK_SECRET_KEY', 'must be set to a random 32-byte key (base64 or hex) when NODE_ENV=production');
    return Buffer.from(DEV_WEBHOOK_SECRET_KEY, 'base64');
  }
  const key = /^[0-9a-f]{64}$/i.test(raw) ? Buffer.from(raw, 'hex') : Buffer.from(raw, 'base64');
  if (key.length !== 32) throw new ConfigError('WEBHOOK_SECRET_KEY', 'must be 32 bytes, base64 or hex encoded');
  return key;
}

/** Billing's payment gateway and dunning schedule (issue #14). */
export interface PaymentsConfig {
  /** PAYMENT_GATEWAY: `sandbox` (embedded default: no network, outcomes by test card) or `stripe`. */
  gateway: 'sandbox' | 'stripe';
  /** PAYMENT_SANDBOX_FILE: where the sandbox keeps its charges (append-only JSON lines) so a restart forgets none;
   * default <data dir>/payment-sandbox.jsonl, in memory under NODE_ENV=test unless set. */
  sandboxFile: string | undefined;
  /** DUNNING_RETRY_DAYS: days after the first failure on which the payment is retried (default 1,3,5,7). */
  dunningRetryDays: number[];
  /** DUNNING_JITTER_MINUTES: each retry moves by up to ± this much (deterministic per invoice and attempt). */
  dunningJitterMinutes: number;
  /** DUNNING_GRACE_DAYS: after the last retry failed, how long until the final action. */
  dunningGraceDays: number;
  /** DUNNING_FINAL_ACTION: `cancel` the subscription, or `downgrade` to the default (free) plan. */
  dunningFinalAction: 'cancel' | 'downgrade';
  /** INVOICE_LINK_TTL_SEC: lifetime of an invoice PDF's signed download link. */
  invoiceLinkTtlSec: number;
  /**
   * INVOICE_RUN_MAX_PER_SEC: paces the batched invoice run to at most this many invoiced periods per second
   * per worker (smaller batches, one at a time), leaving CPU to the API on a shared machine; 0 (default):
   * unpaced, a period end's invoices as fast as the worker and Postgres go.
   */
  invoiceRunMaxPerSec: number;
}

function retryDays(env: Env): number[] {
  const raw = str(env, 'DUNNING_RETRY_DAYS') ?? '1,3,5,7';
  const days = raw.split(',').map((d) => Number(d.trim()));
  if (days.length === 0 || days.length > 20 || days.some((d, i) => !Number.isInteger(d) || d < 1 || d > 60 || (i > 0 && d <= days[i - 1]!))) {
    throw new ConfigError('DUNNING_RETRY_DAYS', 'must be increasing whole days between 1 and 60, e.g. 1,3,5,7');
  }
  return days;
}

/** The file storage port (src/platform/storage). */
export interface StorageConfig {
  driver: 'fs' | 's3';
  /** fs: root directory (default `<PLINTH_DATA_DIR>/files`). */
  dir: string;
  /** fs: HMAC key of download links. */
  signingKey: Buffer;
  s3: { bucket: string | undefined; region: string; endpoint: string | undefined; forcePathStyle: boolean };
}

export interface ReportingConfig {
  storage: StorageConfig;
  /** Exports running at once across all worker processes (each org runs one at a time). */
  exportGlobalConcurrency: number;
  exportBatchRows: number;
  /** Rows per second an export may read, 0 = as fast as its database backend goes (the trade-off between an
   * export's speed and the p99 of the transactional load beside it: src/modules/reporting/README.md). */
  exportMaxRowsPerSec: number;
  /** Serialized bytes per uploaded part, and so per checkpoint (at least the storage's minimum part). */
  exportPartBytes: number;
  /** A running export's lease: another worker takes over (from the checkpoint) this long after its worker died. */
  exportLeaseMs: number;
  exportStatementTimeoutMs: number;
  /** How long a finished export's file (and its links) stay available. */
  exportRetentionHours: number;
  exportLinkTtlSec: number;
}

function storageConfig(env: Env, dataDir: string, webhookSecretKey: Buffer): StorageConfig {
  const driver = oneOf(env, 'STORAGE_DRIVER', ['fs', 's3'] as const, 'fs');
  const raw = str(env, 'STORAGE_SIGNING_KEY');
  if (raw !== undefined && raw.length < 32) throw new ConfigError('STORAGE_SIGNING_KEY', 'must be at least 32 characters');
  const bucket = str(env, 'STORAGE_S3_BUCKET');
  if (driver === 's3' && !bucket) throw new ConfigError('STORAGE_S3_BUCKET', 'is required with STORAGE_DRIVER=s3');
  return {
    driver,
    dir: path.resolve(str(env, 'STORAGE_DIR') ?? path.join(dataDir, 'files')),
    // Unset: derived from WEBHOOK_SECRET_KEY (required in production), so links are never signed with a public key.
    signingKey: raw !== undefined ? Buffer.from(raw, 'utf8') : createHmac('sha256', webhookSecretKey).update('plinth storage links').digest(),
    s3: {
      bucket,
      region: str(env, 'STORAGE_S3_REGION') ?? 'us-east-1',
      endpoint: url(env, 'STORAGE_S3_ENDPOINT', ['http:', 'https:']),
      forcePathStyle: bool(env, 'STORAGE_S3_FORCE_PATH_STYLE', false),
    },
  };
}

export interface EdgeConfig {
  rateLimitEnabled: boolean;
  /** Window of every rate-limit policy, in seconds. */
  rateLimitWindowSec: number;
  /** Requests per window per principal (session or API key). */
  rateLimitPrincipal: number;
  /** Requests per window per organization (all its principals together). */
  rateLimitOrg: number;
  /** Requests per window per client IP on public routes (signup, login). */
  rateLimitIp: number;
  /** Failed authentications (401) and authorization misses (403/404 on org routes) per window per client IP. */
  rateLimitAuthFailures: number;
  /**
   * With Redis: the largest local lease of rate-limit cells, in % of a policy's quota (0: every request asks
   * Redis). Bounds the overshoot: a key admits at most quota + instances × lease per window (rate-limit-lease.ts).
   */
  rateLimitLeasePercent: number;
  /** How long leased cells (and a cached auth-failure gate answer) stay usable. */
  rateLimitLeaseMs: number;
  /** How long a stored Idempotency-Key response is replayed. */
  idempotencyTtlSec: number;
  /** Lease of an in-flight Idempotency-Key claim, renewed while the request runs (a dead claim frees within it). */
  idempotencyLeaseSec: number;
  /** 0 disables a check. */
  pressureMaxEventLoopDelayMs: number;
  pressureMaxHeapBytes: number;
  pressureMaxRssBytes: number;
  pressureRetryAfterSec: number;
  /** Requests in progress per process before new ones get 503 (0 = no cap). */
  maxInFlight: number;
  /** Adaptive concurrency limit per process (http/concurrency-limit.ts): on by default in production. */
  concurrencyLimit: { enabled: boolean; initialLimit: number; minLimit: number; maxLimit: number; retryAfterSec: number };
  /** L1 (in-process) cache entry lifetime: the bound on cross-process staleness if an invalidation is lost. */
  cacheL1TtlMs: number;
}

export class ConfigError extends Error {
  constructor(variable: string, problem: string) {
    super(`Invalid configuration: ${variable} ${problem}`);
    this.name = 'ConfigError';
  }
}

type Env = Record<string, string | undefined>;

function str(env: Env, name: string): string | undefined {
  const v = env[name];
  return v === undefined || v.trim() === '' ? undefined : v.trim();
}

function int(env: Env, name: string, fallback: number, min: number, max: number): number {
  const raw = str(env, name);
  if (raw === undefined) return fallback;
  if (!/^\d+$/.test(raw)) throw new ConfigError(name, `must be an integer between ${min} and ${max} (got "${raw}")`);
  const n = Number(raw);
  if (n < min || n > max) throw new ConfigError(name, `must be an integer between ${min} and ${max} (got ${n})`);
  return n;
}

function oneOf<T extends string>(env: Env, name: string, allowed: readonly T[], fallback: T): T {
  const raw = str(env, name);
  if (raw === undefined) return fallback;
  if (!(allowed as readonly string[]).includes(raw)) {
    throw new ConfigError(name, `must be one of ${allowed.join(', ')} (got "${raw}")`);
  }
  return raw as T;
}

function url(env: Env, name: string, protocols: string[]): string | undefined {
  const raw = str(env, name);
  if (raw === undefined) return undefined;
  return checkUrl(name, raw, protocols);
}

function checkUrl(name: string, raw: string, protocols: string[]): string {
  let parsed: URL;
  try {
    parsed = new URL(raw);
  } catch {
    throw new ConfigError(name, `must be a URL like ${protocols[0]}//host:port/... (could not parse it)`);
  }
  if (!protocols.includes(parsed.protocol)) {
    throw new ConfigError(name, `must use ${protocols.join(' or ')} (got ${parsed.protocol})`);
  }
  return raw;
}

function bool(env: Env, name: string, fallback: boolean): boolean {
  const raw = str(env, name);
  if (raw === undefined) return fallback;
  if (['1', 'true', 'yes'].includes(raw.toLowerCase())) return true;
  if (['0', 'false', 'no'].includes(raw.toLowerCase())) return false;
  throw new ConfigError(name, `must be true or false (got "${raw}")`);
}

const PG = ['postgres:', 'postgresql:'];

function metricsToken(env: Env): string | undefined {
  const token = str(env, 'METRICS_TOKEN');
  if (token !== undefined && token.length < 16) throw new ConfigError('METRICS_TOKEN', 'must be at least 16 characters');
  return token;
}

function concurrencyLimit(env: Env): EdgeConfig['concurrencyLimit'] {
  const minLimit = int(env, 'CONCURRENCY_LIMIT_MIN', 4, 1, 100_000);
  const maxLimit = int(env, 'CONCURRENCY_LIMIT_MAX', 1000, 1, 100_000);
  if (maxLimit < minLimit) throw new ConfigError('CONCURRENCY_LIMIT_MAX', `must be at least CONCURRENCY_LIMIT_MIN (${minLimit})`);
  const initialLimit = int(env, 'CONCURRENCY_LIMIT_INITIAL', Math.min(maxLimit, Math.max(minLimit, 20)), 1, 100_000);
  if (initialLimit < minLimit || initialLimit > maxLimit) {
    throw new ConfigError('CONCURRENCY_LIMIT_INITIAL', `must be between CONCURRENCY_LIMIT_MIN (${minLimit}) and CONCURRENCY_LIMIT_MAX (${maxLimit})`);
  }
  return {
    // On in production (issue #19): refusals are answered before Fastify from a prebuilt 503 (in-flight.ts), so
    // shedding no longer costs the CPU the admitted requests need (the first measurement, before that, had
    // admitted p99 688 ms on vs 179 ms off). Development and tests opt in.
    enabled: bool(env, 'CONCURRENCY_LIMIT_ENABLED', env.NODE_ENV === 'production'),
    initialLimit,
    minLimit,
    maxLimit,
    retryAfterSec: int(env, 'CONCURRENCY_LIMIT_RETRY_AFTER_SEC', 1, 1, 3600),
  };
}

export function loadConfig(env: Env = process.env): Config {
  const nodeEnv = oneOf(env, 'NODE_ENV', ['development', 'production', 'test'] as const, 'development');
  const production = nodeEnv === 'production';
  const databaseUrl = url(env, 'DATABASE_URL', PG);
  const redisUrl = url(env, 'REDIS_URL', ['redis:', 'rediss:']);
  if (production && !databaseUrl) {
    throw new ConfigError('DATABASE_URL', 'is required when NODE_ENV=production (the embedded PGlite database is for development only)');
  }
  if (production && !redisUrl) {
    throw new ConfigError('REDIS_URL', 'is required when NODE_ENV=production (in-memory cache, limits and queues are single-process only)');
  }
  const replicas = (str(env, 'DATABASE_REPLICA_URLS') ?? '')
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean)
    .map((u) => checkUrl('DATABASE_REPLICA_URLS', u, PG));
  if (replicas.length > 0 && !databaseUrl) {
    throw new ConfigError('DATABASE_REPLICA_URLS', 'needs DATABASE_URL as well (replicas are for the Postgres mode)');
  }
  const redisPrefix = str(env, 'REDIS_PREFIX') ?? 'plinth:';
  if (!/^[A-Za-z0-9:_.-]{1,64}$/.test(redisPrefix)) {
    throw new ConfigError('REDIS_PREFIX', 'must be 1-64 characters of letters, digits, ":", "_", "." or "-"');
  }

  const dataDir = path.resolve(str(env, 'PLINTH_DATA_DIR') ?? './.plinth');
  const publicUrl = checkUrl('PUBLIC_URL', (str(env, 'PUBLIC_URL') ?? 'http://127.0.0.1:3000').replace(/\/+$/, ''), ['http:', 'https:']);
  return {
    nodeEnv,
    role: oneOf(env, 'PLINTH_ROLE', ['all', 'api', 'worker'] as const, 'all'),
    port: int(env, 'PORT', 3000, 0, 65535),
    host: str(env, 'HOST') ?? (production ? '0.0.0.0' : '127.0.0.1'),
    dataDir,
    databaseUrl,
    databaseAppUrl: url(env, 'DATABASE_APP_URL', PG),
    databaseReplicaUrls: replicas,
    databaseReplicaMaxLagMs: int(env, 'DATABASE_REPLICA_MAX_LAG_MS', 5_000, 0, 3_600_000),
    databasePoolMax: int(env, 'DATABASE_POOL_MAX', 10, 1, 1000),
    migrationLockTimeoutMs: int(env, 'MIGRATION_LOCK_TIMEOUT_MS', 5_000, 100, 600_000),
    redisUrl,
    redisPrefix,
    logLevel: oneOf(env, 'LOG_LEVEL', ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const, 'info'),
    shutdownGraceMs: int(env, 'SHUTDOWN_GRACE_MS', 10_000, 0, 600_000),
    shutdownDelayMs: int(env, 'SHUTDOWN_DELAY_MS', 0, 0, 120_000),
    bodyLimitBytes: int(env, 'BODY_LIMIT_BYTES', 1_048_576, 1024, 104_857_600),
    requestTimeoutMs: int(env, 'REQUEST_TIMEOUT_MS', 30_000, 100, 600_000),
    slowQueryMs: int(env, 'SLOW_QUERY_MS', 200, 0, 600_000),
    trustProxy: bool(env, 'TRUST_PROXY', false),
    jobsConcurrency: int(env, 'JOBS_CONCURRENCY', 8, 1, 256),
    jobsBackgroundHoldMaxMs: int(env, 'JOBS_BACKGROUND_HOLD_MAX_MS', 60_000, 0, 600_000),
    jobsPollMs: int(env, 'JOBS_POLL_MS', 50, 5, 60_000),
    jobsIdlePollMs: int(env, 'JOBS_IDLE_POLL_MS', 1_000, 5, 600_000),
    jobsSweepAfterMs: int(env, 'JOBS_SWEEP_AFTER_MS', 60_000, 200, 86_400_000),
    jobsStalledMs: int(env, 'JOBS_STALLED_MS', 30_000, 500, 600_000),
    jobsConsumerBackfillMs: int(env, 'JOBS_CONSUMER_BACKFILL_MS', 900_000, 0, 7 * 86_400_000),
    jobsConsumerRetireMs: int(env, 'JOBS_CONSUMER_RETIRE_MS', 3_600_000, 120_000, 30 * 86_400_000),
    webauthn: webauthnConfig(env, publicUrl, production),
    loginThrottle: {
      perAccountPerHour: int(env, 'LOGIN_MAX_FAILURES_PER_ACCOUNT_PER_HOUR', 100, 1, 1_000_000),
      perIpPerHour: int(env, 'LOGIN_MAX_FAILURES_PER_IP_PER_HOUR', 1000, 1, 10_000_000),
      perAccountIpPerHour: int(env, 'LOGIN_MAX_FAILURES_PER_ACCOUNT_IP_PER_HOUR', 10, 1, 1_000_000),
      delayAfter: int(env, 'LOGIN_DELAY_AFTER_FAILURES', 5, 1, 1_000_000),
      maxDelaySec: int(env, 'LOGIN_MAX_DELAY_SEC', 300, 1, 3_600),
    },
    metricsToken: metricsToken(env),
    metricsPort: str(env, 'METRICS_PORT') === undefined ? undefined : int(env, 'METRICS_PORT', 0, 0, 65535),
    workerNice: int(env, 'WORKER_NICE', 10, 0, 19),
    edge: {
      rateLimitEnabled: bool(env, 'RATE_LIMIT_ENABLED', true),
      rateLimitWindowSec: int(env, 'RATE_LIMIT_WINDOW_SEC', 60, 1, 86_400),
      rateLimitPrincipal: int(env, 'RATE_LIMIT_PRINCIPAL', 1200, 1, 10_000_000),
      rateLimitOrg: int(env, 'RATE_LIMIT_ORG', 6000, 1, 10_000_000),
      rateLimitIp: int(env, 'RATE_LIMIT_IP', 300, 1, 10_000_000),
      rateLimitAuthFailures: int(env, 'RATE_LIMIT_AUTH_FAILURES', 60, 1, 10_000_000),
      rateLimitLeasePercent: int(env, 'RATE_LIMIT_LEASE_PERCENT', 2, 0, 25),
      rateLimitLeaseMs: int(env, 'RATE_LIMIT_LEASE_MS', 1000, 50, 10_000),
      idempotencyTtlSec: int(env, 'IDEMPOTENCY_TTL_SEC', 86_400, 60, 604_800),
      idempotencyLeaseSec: int(env, 'IDEMPOTENCY_LEASE_SEC', 5, 2, 600),
      // Off by default: the adaptive concurrency limit sheds load (a fixed event-loop threshold queued bursts).
      pressureMaxEventLoopDelayMs: int(env, 'PRESSURE_MAX_EVENT_LOOP_DELAY_MS', 0, 0, 600_000),
      pressureMaxHeapBytes: int(env, 'PRESSURE_MAX_HEAP_BYTES', 0, 0, 1e12),
      pressureMaxRssBytes: int(env, 'PRESSURE_MAX_RSS_BYTES', 0, 0, 1e12),
      pressureRetryAfterSec: int(env, 'PRESSURE_RETRY_AFTER_SEC', 5, 1, 3600),
      maxInFlight: int(env, 'MAX_IN_FLIGHT', 0, 0, 1_000_000),
      concurrencyLimit: concurrencyLimit(env),
      cacheL1TtlMs: int(env, 'CACHE_L1_TTL_MS', 5000, 0, 3_600_000),
    },
    migrateOnStart: bool(env, 'MIGRATE_ON_START', true),
    reporting: {
      storage: storageConfig(env, dataDir, secretKey(env, production)),
      exportGlobalConcurrency: int(env, 'EXPORT_GLOBAL_CONCURRENCY', 4, 1, 1000),
      exportBatchRows: int(env, 'EXPORT_BATCH_ROWS', 25_000, 1, 100_000),
      exportMaxRowsPerSec: int(env, 'EXPORT_MAX_ROWS_PER_SEC', 0, 0, 100_000_000),
      exportPartBytes: int(env, 'EXPORT_PART_BYTES', 8 * 1024 * 1024, 1, 1024 * 1024 * 1024),
      exportLeaseMs: int(env, 'EXPORT_LEASE_MS', 60_000, 1_000, 3_600_000),
      exportStatementTimeoutMs: int(env, 'EXPORT_STATEMENT_TIMEOUT_MS', 30_000, 100, 3_600_000),
      exportRetentionHours: int(env, 'EXPORT_RETENTION_HOURS', 72, 1, 24 * 365),
      exportLinkTtlSec: int(env, 'EXPORT_LINK_TTL_SEC', 3_600, 10, 7 * 86_400),
    },
    paymentGateways: {
      stripeSecretKey: str(env, 'STRIPE_SECRET_KEY'),
      stripeWebhookSecret: str(env, 'STRIPE_WEBHOOK_SECRET'),
      // Production talks to Stripe over TLS only; plain http is for local emulators and tests.
      stripeApiBase: url(env, 'STRIPE_API_BASE', production ? ['https:'] : ['http:', 'https:']),
      stripeTimeoutMs: int(env, 'STRIPE_TIMEOUT_MS', 10_000, 100, 120_000),
      sandboxWebhookSecret: str(env, 'SANDBOX_WEBHOOK_SECRET') ?? createHmac('sha256', secretKey(env, production)).update('plinth sandbox payment webhooks').digest('hex'),
      webhookToleranceSec: int(env, 'PAYMENT_WEBHOOK_TOLERANCE_SEC', 300, 10, 3_600),
    },
    payments: {
      gateway: oneOf(env, 'PAYMENT_GATEWAY', ['sandbox', 'stripe'] as const, 'sandbox'),
      sandboxFile: str(env, 'PAYMENT_SANDBOX_FILE') ?? (nodeEnv === 'test' ? undefined : path.join(dataDir, 'payment-sandbox.jsonl')),
      dunningRetryDays: retryDays(env),
      dunningJitterMinutes: int(env, 'DUNNING_JITTER_MINUTES', 60, 0, 720),
      dunningGraceDays: int(env, 'DUNNING_GRACE_DAYS', 3, 0, 60),
      dunningFinalAction: oneOf(env, 'DUNNING_FINAL_ACTION', ['cancel', 'downgrade'] as const, 'cancel'),
      invoiceLinkTtlSec: int(env, 'INVOICE_LINK_TTL_SEC', 3_600, 10, 7 * 86_400),
      invoiceRunMaxPerSec: int(env, 'INVOICE_RUN_MAX_PER_SEC', 0, 0, 1_000_000),
    },
    notifications: {
      webhookSecretKey: secretKey(env, production),
      webhookStrictUrls: production || bool(env, 'WEBHOOK_STRICT_URLS', false),
      webhookTimeoutMs: int(env, 'WEBHOOK_TIMEOUT_MS', 10_000, 50, 60_000),
      webhookMaxAttempts: int(env, 'WEBHOOK_MAX_ATTEMPTS', 8, 1, 100),
      webhookBackoffBaseMs: int(env, 'WEBHOOK_BACKOFF_BASE_MS', 5_000, 1, 3_600_000),
      webhookBackoffMaxMs: int(env, 'WEBHOOK_BACKOFF_MAX_MS', 3_600_000, 1, 86_400_000),
      webhookDisableAfter: int(env, 'WEBHOOK_DISABLE_AFTER_FAILURES', 20, 1, 10_000),
      smtpUrl: url(env, 'SMTP_URL', ['smtp:', 'smtps:']),
      mailFrom: str(env, 'MAIL_FROM') ?? 'Plinth <no-reply@plinth.local>',
      publicUrl,
    },
  };
}
