import { randomUUID } from 'node:crypto';
import {
  ErrorCode,
  OpenFeature,
  StandardResolutionReasons,
  type Client,
  type EvaluationContext,
  type JsonValue,
  type Provider,
  type ResolutionDetails,
} from '@openfeature/server-sdk';
import { LRUCache } from 'lru-cache';
import type { Database } from '../db/database.ts';
import { isUuid } from '../ids.ts';
import * as repo from './flags.repo.ts';

/**
 * Feature flags through the OpenFeature server SDK, backed by Postgres: a global default per flag
 * (`feature_flags`) and per-tenant overrides (`feature_flag_overrides`, under RLS). Evaluation context:
 * `tenantId` (or `targetingKey`) selects the override.
 *
 * Values are cached per process for `cacheTtlMs` (default 5 s): a change made on one instance is visible
 * on every instance within that bound, and immediately on the instance that made it.
 */
export interface FlagDefinition {
  key: string;
  description: string;
  defaultValue: JsonValue;
  updatedAt: Date;
}

export interface Flags {
  client: Client;
  provider: Provider;
  list(): Promise<FlagDefinition[]>;
  define(key: string, defaultValue: JsonValue, description?: string): Promise<FlagDefinition>;
  setOverride(tenantId: string, key: string, value: JsonValue): Promise<void>;
  clearOverride(tenantId: string, key: string): Promise<boolean>;
  close(): Promise<void>;
}

/** A `feature_flags` row as the API shows it; stored JSON is whatever `define` wrote, a JsonValue. */
function toDefinition(r: { key: string; description: string; default_value: unknown; updated_at: Date }): FlagDefinition {
  return { key: r.key, description: r.description, defaultValue: r.default_value as JsonValue, updatedAt: r.updated_at };
}

type Resolved = { value: JsonValue; reason: string } | undefined;

function typeOf(v: JsonValue): string {
  return v === null ? 'null' : Array.isArray(v) ? 'object' : typeof v;
}

export async function createFlags(opts: { db: Database; cacheTtlMs?: number }): Promise<Flags> {
  const db = opts.db.scope('feature_flags', 'feature_flag_overrides');
  const ttl = opts.cacheTtlMs ?? 5_000;
  // Cache misses too (as null), so an unknown flag asked on every request does not hit the database.
  const definitions = new LRUCache<string, { value: JsonValue | null }>({ max: 1_000, ttl });
  const overrides = new LRUCache<string, { value: JsonValue | null }>({ max: 10_000, ttl });

  async function definition(key: string): Promise<JsonValue | null> {
    const hit = definitions.get(key);
    if (hit) return hit.value;
    const value = ((await repo.findDefault(db, key)) ?? null) as JsonValue | null;
    definitions.set(key, { value });
    return value;
  }

  async function override(tenantId: string, key: string): Promise<JsonValue | null> {
    const cacheKey = `${tenantId}:${key}`;
    const hit = overrides.get(cacheKey);
    if (hit) return hit.value;
    const value = ((await repo.findOverride(db, tenantId, key)) ?? null) as JsonValue | null;
    overrides.set(cacheKey, { value });
    return value;
  }

  async function resolve(key: string, context: EvaluationContext): Promise<Resolved> {
    const tenantId = (context.tenantId as string | undefined) ?? context.targetingKey;
    const base = await definition(key);
    if (base === null) return undefined;
    // Only an org id can have an override; anything else (a targetingKey like an email) would make the
    // tenant-context cast fail in Postgres and turn every evaluation into an error + database round trip.
    if (tenantId && isUuid(tenantId)) {
      const value = await override(tenantId, key);
      if (value !== null) return { value, reason: StandardResolutionReasons.TARGETING_MATCH };
    }
    return { value: base, reason: StandardResolutionReasons.STATIC };
  }

  async function evaluate<T extends JsonValue>(key: string, fallback: T, context: EvaluationContext): Promise<ResolutionDetails<T>> {
    const found = await resolve(key, context);
    if (!found) return { value: fallback, reason: StandardResolutionReasons.ERROR, errorCode: ErrorCode.FLAG_NOT_FOUND };
    if (typeOf(found.value) !== typeOf(fallback)) {
      return {
        value: fallback,
        reason: StandardResolutionReasons.ERROR,
        errorCode: ErrorCode.TYPE_MISMATCH,
        errorMessage: `flag ${key} is ${typeOf(found.value)}, asked as ${typeOf(fallback)}`,
      };
    }
    return { value: found.value as T, reason: found.reason };
  }

  const provider: Provider = {
    metadata: { name: 'plinth-postgres' },
    runsOn: 'server',
    resolveBooleanEvaluation: (key, fallback, context) => evaluate(key, fallback, context),
    resolveStringEvaluation: (key, fallback, context) => evaluate(key, fallback, context),
    resolveNumberEvaluation: (key, fallback, context) => evaluate(key, fallback, context),
    resolveObjectEvaluation: (key, fallback, context) => evaluate(key, fallback, context),
  };

  // A domain per instance: several platforms in one process (tests) never share a provider.
  const domain = `plinth-${randomUUID()}`;
  await OpenFeature.setProviderAndWait(domain, provider);
  const client = OpenFeature.getClient(domain);

  return {
    client,
    provider,
    async list() {
      return (await repo.listFlags(db)).map(toDefinition);
    },
    async define(key, defaultValue, description = '') {
      const row = await repo.upsertFlag(db.owner, key, defaultValue, description);
      definitions.delete(key);
      return toDefinition(row);
    },
    async setOverride(tenantId, key, value) {
      await repo.upsertOverride(db, tenantId, key, value);
      overrides.delete(`${tenantId}:${key}`);
    },
    async clearOverride(tenantId, key) {
      const deleted = await repo.deleteOverride(db, tenantId, key);
      overrides.delete(`${tenantId}:${key}`);
      return deleted;
    },
    async close() {
      definitions.clear();
      overrides.clear();
    },
  };
}
