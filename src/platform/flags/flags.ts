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
import { sql } from 'kysely';
import { LRUCache } from 'lru-cache';
import type { Database } from '../db/database.ts';
import { isUuid, newId } from '../ids.ts';

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
  const { db } = opts;
  const ttl = opts.cacheTtlMs ?? 5_000;
  // Cache misses too (as null), so an unknown flag asked on every request does not hit the database.
  const definitions = new LRUCache<string, { value: JsonValue | null }>({ max: 1_000, ttl });
  const overrides = new LRUCache<string, { value: JsonValue | null }>({ max: 10_000, ttl });

  async function definition(key: string): Promise<JsonValue | null> {
    const hit = definitions.get(key);
    if (hit) return hit.value;
    const row = await db.app.selectFrom('feature_flags').select('default_value').where('key', '=', key).executeTakeFirst();
    const value = row ? (row.default_value as JsonValue) : null;
    definitions.set(key, { value });
    return value;
  }

  async function override(tenantId: string, key: string): Promise<JsonValue | null> {
    const cacheKey = `${tenantId}:${key}`;
    const hit = overrides.get(cacheKey);
    if (hit) return hit.value;
    const row = await db.withTenant(tenantId, (trx) =>
      trx.selectFrom('feature_flag_overrides').select('value').where('flag_key', '=', key).executeTakeFirst(),
    );
    const value = row ? (row.value as JsonValue) : null;
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
      const rows = await db.app.selectFrom('feature_flags').selectAll().orderBy('key').execute();
      return rows.map(toDefinition);
    },
    async define(key, defaultValue, description = '') {
      // The app role may only read flag definitions; defining one is an operator action.
      const row = await db.owner
        .insertInto('feature_flags')
        .values({ key, default_value: JSON.stringify(defaultValue), description })
        .onConflict((oc) =>
          oc.column('key').doUpdateSet({ default_value: JSON.stringify(defaultValue), description, updated_at: sql`now()` }),
        )
        .returningAll()
        .executeTakeFirstOrThrow();
      definitions.delete(key);
      return toDefinition(row);
    },
    async setOverride(tenantId, key, value) {
      await db.withTenant(tenantId, (trx) =>
        trx
          .insertInto('feature_flag_overrides')
          .values({ tenant_id: tenantId, id: newId(), flag_key: key, value: JSON.stringify(value) })
          .onConflict((oc) => oc.columns(['tenant_id', 'flag_key']).doUpdateSet({ value: JSON.stringify(value), updated_at: sql`now()` }))
          .execute(),
      );
      overrides.delete(`${tenantId}:${key}`);
    },
    async clearOverride(tenantId, key) {
      const res = await db.withTenant(tenantId, (trx) =>
        trx.deleteFrom('feature_flag_overrides').where('flag_key', '=', key).executeTakeFirst(),
      );
      overrides.delete(`${tenantId}:${key}`);
      return Number(res.numDeletedRows) > 0;
    },
    async close() {
      definitions.clear();
      overrides.clear();
    },
  };
}
