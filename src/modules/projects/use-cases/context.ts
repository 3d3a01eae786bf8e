import type { CacheProvider, TenantCache } from '../../../platform/cache/cache.ts';
import type { Database, DbScope } from '../../../platform/db/database.ts';
import type { TenantActorContext } from '../../../platform/http/actor.ts';
import { AppError } from '../../../platform/http/errors.ts';
import type { toPage } from '../../../platform/http/pagination.ts';
import type { EventPublisher } from '../../../platform/outbox/publisher.ts';
import type { Audit } from '../../audit/index.ts';
import { projectNotFound } from '../projects.errors.ts';
import { PROJECT_EVENTS, type CacheStaleEvent, type CacheStalePayload } from '../projects.events.ts';
import { findProject, projectsScope, type Project, type ProjectsTables, type Trx } from '../projects.repo.ts';
import type { Task } from '../tasks.repo.ts';

/** The tenancy module's answer to "is this user a member of this org?". */
export type IsMember = (orgId: string, userId: string) => Promise<boolean>;

/**
 * Plan limits: billing decides whether an org may create one more project. Two steps, because the count is
 * taken under the creating transaction's lock but billing's answer must not need a query inside it: the
 * seam is asked before the transaction (answered from billing's cache) and returns a pure check of the
 * count. A denied check carries the error to throw (billing's 402 problem), or a reason.
 */
export type Entitlements = (request: {
  orgId: string;
  /** `projects.create` counts projects (a limit); `tasks.create` asks the plan's monthly tasks quota. */
  action: 'projects.create' | 'tasks.create';
}) => Promise<(current: number) => { allowed: true } | { allowed: false; reason: string; error?: Error }>;

/** No plan limits (tests, and compositions without billing). */
export const allowEverything: Entitlements = async () => () => ({ allowed: true });

/** The limit each counted action checks, in billing's entitlements. */
const LIMIT_OF = { 'projects.create': 'projects' } as const;
/** The metered quota each uncounted action draws on (its usage is metered from the action's own event). */
const QUOTA_OF = { 'tasks.create': 'tasks.created' } as const;

/**
 * Adapts billing's `limitCheck` and `assertQuota` (both throw billing's own 402 problem naming the limit,
 * the usage and the plan that lifts it; both answer from billing's caches) to this seam.
 */
export function entitlementsVia(
  limitCheck: (orgId: string, limit: string) => Promise<(current: number) => void>,
  assertQuota: (orgId: string, metric: string) => Promise<void> = async () => undefined,
): Entitlements {
  return async ({ orgId, action }) => {
    if (action === 'tasks.create') {
      await assertQuota(orgId, QUOTA_OF[action]);
      return () => ({ allowed: true });
    }
    const check = await limitCheck(orgId, LIMIT_OF[action]);
    return (current) => {
      check(current);
      return { allowed: true };
    };
  };
}

/** Adapts tenancy's `getMember` (which throws a 404 AppError for a non-member) to IsMember. */
export function isMemberVia(getMember: (orgId: string, userId: string) => Promise<unknown>): IsMember {
  return async (orgId, userId) => {
    try {
      await getMember(orgId, userId);
      return true;
    } catch (err) {
      if (err instanceof AppError && err.status === 404) return false;
      throw err;
    }
  };
}

/** Everything the projects module is given; all required (the composition wires each one). */
export interface ProjectsDeps {
  db: Database;
  /** platform.events: a change's events are added in the transaction of the change. */
  events: EventPublisher;
  /** the audit module: every mutation is recorded in the transaction of the change. */
  audit: Audit;
  /** platform.cache: project and task by id (namespaces `projects`, `tasks`). */
  cache: Pick<CacheProvider, 'namespace'>;
  /** tenancy's membership check, for assignees (`isMemberVia(tenancy.getMember)`). */
  isMember: IsMember;
  /** billing's plan limits; `allowEverything` until billing exists. */
  entitlements: Entitlements;
}

/** Hot entries live this long in Redis at most; every change invalidates them at once anyway. */
const CACHE_TTL_SEC = 300;

/** A keyset page, as the platform's toPage makes it. */
export type Page<T> = ReturnType<typeof toPage<T>>;

export type AuditTarget = { type: 'project' | 'task' | 'comment'; id: string };

/** What the use cases share: the module's scope, its ports, and the cached reads. */
export interface UseCaseContext {
  scope: DbScope<ProjectsTables>;
  deps: ProjectsDeps;
  projectCache: TenantCache<Project>;
  taskCache: TenantCache<Task>;
  record(trx: Trx, ctx: TenantActorContext, action: string, target: AuditTarget, changes?: Record<string, unknown>): Promise<void>;
  publish(trx: Trx, ctx: TenantActorContext, name: string, payload: object): Promise<void>;
  /** Hot read through the cache (loads from the primary; not-found throws, so misses are never cached). */
  getProject(tenantId: string, id: string): Promise<Project>;
  /**
   * A cached row changes in this transaction: its invalidation is owed. The event commits with the change
   * and its handler invalidates until Redis takes it (a writer cut off from Redis cannot leave a stale
   * entry behind); call `invalidate` after commit too, for the common case, at once.
   */
  markStale(trx: Trx, ctx: TenantActorContext, change: CacheStalePayload): Promise<void>;
  /** Invalidates now; false when Redis was unreachable (the outbox handler will retry). */
  invalidate(tenantId: string, change: CacheStalePayload): Promise<boolean>;
}

/** The user a change is attributed to (an API key acts for the user who created it). */
export function actingUser(ctx: TenantActorContext): string {
  if (!ctx.actor.userId) throw new Error(`projects: actor ${ctx.actor.type}:${ctx.actor.id} has no user to attribute the change to`);
  return ctx.actor.userId;
}

/** A cached value comes back from Redis as JSON: its timestamps are strings again. */
export function reviveDates<T extends { createdAt: Date; updatedAt: Date }>(v: T): T {
  return { ...v, createdAt: new Date(v.createdAt), updatedAt: new Date(v.updatedAt) };
}

export function createUseCaseContext(deps: ProjectsDeps): UseCaseContext {
  const scope = projectsScope(deps.db);
  // Versioned: a read racing an update can never write the older row back after the invalidation.
  const projectCache = deps.cache.namespace<Project>('projects', { ttlSec: CACHE_TTL_SEC, version: (p) => p.version });
  const taskCache = deps.cache.namespace<Task>('tasks', { ttlSec: CACHE_TTL_SEC, version: (t) => t.version });
  return {
    scope,
    deps,
    projectCache,
    taskCache,
    async record(trx, ctx, action, target, changes = {}) {
      await deps.audit.record(trx, { orgId: ctx.tenantId, action, target, changes, context: { actor: ctx.actor, requestId: ctx.requestId, ip: ctx.ip } });
    },
    async publish(trx, ctx, name, payload) {
      await deps.events.add(trx, { name, tenantId: ctx.tenantId, payload, requestId: ctx.requestId ?? undefined });
    },
    async markStale(trx, ctx, change) {
      // Not a domain event of the tenant (no webhook, no tenant data touched by its handler): it travels as
      // a platform event, the tenant named in the payload for the cache key.
      const payload: CacheStaleEvent = { ...change, tenantId: ctx.tenantId };
      await deps.events.add(trx, { name: PROJECT_EVENTS.cacheStale, tenantId: null, payload, requestId: ctx.requestId ?? undefined });
    },
    invalidate(tenantId, change) {
      return (change.cache === 'projects' ? projectCache : taskCache).invalidate(tenantId, change.key, change.version);
    },
    async getProject(tenantId, id) {
      // Loads go to the primary: a lagging replica must not refill the cache with a stale row after an invalidation.
      const load = async () => (await scope.withTenant(tenantId, (trx) => findProject(trx, tenantId, id))) ?? Promise.reject(projectNotFound());
      return reviveDates(await projectCache.get(tenantId, id, load));
    },
  };
}

export const etagOf = (r: { version: number }) => `"v${r.version}"`;

/** If-Match semantics (RFC 9110): absent = unconditional, `*` = any current version, else a list of tags. */
export function ifMatchHolds(ifMatch: string | undefined, etag: string): boolean {
  if (ifMatch === undefined) return true;
  const tags = ifMatch.split(',').map((t) => t.trim().replace(/^W\//, ''));
  return tags.includes('*') || tags.includes(etag);
}

/** If-None-Match on a GET: true when the client's copy is current (answer 304). */
export function ifNoneMatchHits(ifNoneMatch: string | undefined, etag: string): boolean {
  if (ifNoneMatch === undefined) return false;
  const tags = ifNoneMatch.split(',').map((t) => t.trim().replace(/^W\//, ''));
  return tags.includes('*') || tags.includes(etag);
}

/** Only the fields whose value actually differs: what the audit log and task_updated events carry. */
export function changedFields<C extends object>(current: object, changes: C): Partial<C> {
  const diff: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(changes)) {
    if (v === undefined) continue;
    const before = (current as Record<string, unknown>)[k];
    if (JSON.stringify(before) !== JSON.stringify(v)) diff[k] = v;
  }
  return diff as Partial<C>;
}

/** Audit `changes` in the audit module's shape, `{ field: { from, to } }`; long text recorded by length only. */
export function auditChanges(before: object, after: object): Record<string, unknown> {
  const show = (v: unknown) => (typeof v === 'string' && v.length > 200 ? `(${v.length} characters)` : v);
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(after)) {
    if (v === undefined) continue;
    const from = (before as Record<string, unknown>)[k];
    out[k] = from === undefined ? { to: show(v) } : { from: show(from), to: show(v) };
  }
  return out;
}

/** Labels are case-insensitive tags: trimmed, lower-cased, de-duplicated, kept in first-seen order. */
export function normalizeLabels(labels: string[]): string[] {
  return [...new Set(labels.map((l) => l.trim().toLowerCase()).filter((l) => l.length > 0))];
}
