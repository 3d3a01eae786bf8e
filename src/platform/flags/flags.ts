import { currentRequestContext, runWithContextField } from '../request-context.ts';
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
import { createIntervalCounter } from '../observability/interval-counter.ts';
import * as repo from './flags.repo.ts';
import { inRollout, matchRule, rampTick, startRamp, type BucketBy, type Ramp, type Rollout, type Rule } from './flags.rollout.ts';
import { growingLru } from '../cache/lru.ts';

/**
 * Feature flags through the OpenFeature server SDK, backed by Postgres. A flag resolves, in order:
 * kill switch (→ default) · the org's override · the first matching targeting rule · the percentage
 * rollout (deterministic bucket by org or user) · the default.
 *
 * Definitions are cached per process for `cacheTtlMs` (default 5 s): a change made on one instance is
 * visible on every instance within that bound, and immediately on the instance that made it. Requests
 * that got a rollout's value are counted (requests, 5xx) per flag and flushed per minute; a ramp's guard
 * reads those counts.
 */
export interface FlagDefinition {
  key: string;
  description: string;
  defaultValue: JsonValue;
  rules: Rule[];
  rollout: Rollout | null;
  ramp: Ramp | null;
  killed: boolean;
  rolloutFullSince: Date | null;
  updatedAt: Date;
}

/** The flags a request was given a rollout's value for (filled only when it was). */
export interface Exposures {
  keys?: Set<string>;
}

export interface FlagChange {
  id: string;
  action: string;
  actor: string;
  before: unknown;
  after: unknown;
  at: Date;
}

export interface RampInput {
  value: JsonValue;
  bucketBy: BucketBy;
  steps: number[];
  everyMinutes: number;
  guard: Ramp['guard'];
}

export interface Flags {
  client: Client;
  provider: Provider;
  list(): Promise<FlagDefinition[]>;
  get(key: string): Promise<FlagDefinition | undefined>;
  define(key: string, defaultValue: JsonValue, description?: string, actor?: string): Promise<FlagDefinition>;
  setOverride(tenantId: string, key: string, value: JsonValue, actor?: string): Promise<void>;
  clearOverride(tenantId: string, key: string, actor?: string): Promise<boolean>;
  setRules(key: string, rules: Rule[], actor: string): Promise<FlagDefinition | undefined>;
  /** A fixed percentage (ends any ramp). */
  setRollout(key: string, rollout: Rollout | null, actor: string): Promise<FlagDefinition | undefined>;
  /** Starts a ramp at its first step. */
  ramp(key: string, input: RampInput, actor: string): Promise<FlagDefinition | undefined>;
  pauseRamp(key: string, paused: boolean, actor: string, reason?: string): Promise<FlagDefinition | undefined>;
  /** On: everyone gets the default, overrides, rules and rollout included; a running ramp pauses. */
  kill(key: string, killed: boolean, actor: string): Promise<FlagDefinition | undefined>;
  changes(key: string, limit?: number): Promise<FlagChange[]>;
  /** Flags whose rollout has been at 100 % for more than `days`: remove them from the code. */
  stale(days: number): Promise<FlagDefinition[]>;
  /** Advances or pauses every running ramp (the worker's schedule); returns what it did. */
  tickRamps(now?: Date): Promise<{ key: string; action: 'advanced' | 'paused'; percentage?: number; reason?: string }[]>;
  /** Runs fn (a request, see app.ts) noting in `exposures` the flags whose rolled-out value it is given. */
  trackExposures<T>(exposures: Exposures, fn: () => T): T;
  /** Counts a finished request against the flags rolled out to it, with its outcome. */
  recordOutcome(exposures: Exposures, failed: boolean): void;
  /** Deletes exposure counts older than `days` (a daily schedule). */
  pruneExposures(days: number): Promise<void>;
  /** Writes the counts gathered since the last flush (called every `flushMs`, and on close). */
  flushExposures(): Promise<void>;
  close(): Promise<void>;
}

function toDefinition(r: repo.FlagRow): FlagDefinition {
  return {
    key: r.key,
    description: r.description,
    defaultValue: r.default_value as JsonValue,
    rules: (r.rules ?? []) as Rule[],
    rollout: (r.rollout ?? null) as Rollout | null,
    ramp: (r.ramp ?? null) as Ramp | null,
    killed: r.killed,
    rolloutFullSince: r.rollout_full_since,
    updatedAt: r.updated_at,
  };
}

type Resolved = { value: JsonValue; reason: string; rolledOut?: boolean } | undefined;

export function jsonType(v: unknown): string {
  return v === null ? 'null' : Array.isArray(v) ? 'object' : typeof v;
}

const SYSTEM = 'system';

export async function createFlags(opts: { db: Database; cacheTtlMs?: number; flushMs?: number }): Promise<Flags> {
  const db = opts.db.scope('feature_flags', 'feature_flag_overrides', 'feature_flag_changes', 'feature_flag_exposures');
  const ttl = opts.cacheTtlMs ?? 5_000;
  // Cache misses too (as null), so an unknown flag asked on every request does not hit the database.
  const definitions = new LRUCache<string, { def: FlagDefinition | null }>({ max: 1_000, ttl });
  const overrides = growingLru<string, { value: JsonValue | null }>({ entries: 10_000, ttl });
  // Per flag since the last flush; a batch the database did not take is written again next time (the guard
  // would otherwise miss the failing minute).
  const counts = createIntervalCounter({
    fields: ['requests', 'errors'] as const,
    write: (batch) => repo.addExposures(db, [...batch.counts].map(([key, c]) => ({ key, ...c }))),
  });

  async function definition(key: string): Promise<FlagDefinition | null> {
    const hit = definitions.get(key);
    if (hit) return hit.def;
    const row = await repo.findFlag(db, key);
    const def = row ? toDefinition(row) : null;
    definitions.set(key, { def });
    return def;
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
    const def = await definition(key);
    if (!def) return undefined;
    if (def.killed) return { value: def.defaultValue, reason: StandardResolutionReasons.DISABLED };
    const tenantId = (context.tenantId as string | undefined) ?? context.targetingKey;
    // Only an org id can have an override; anything else (a targetingKey like an email) would make the
    // tenant-context cast fail in Postgres and turn every evaluation into an error + database round trip.
    if (tenantId && isUuid(tenantId)) {
      const value = await override(tenantId, key);
      if (value !== null) return { value, reason: StandardResolutionReasons.TARGETING_MATCH };
    }
    const rule = matchRule(def.rules, context);
    if (rule) return { value: rule.value, reason: StandardResolutionReasons.TARGETING_MATCH };
    if (def.rollout && inRollout(key, def.rollout, context)) return { value: def.rollout.value, reason: StandardResolutionReasons.SPLIT, rolledOut: true };
    return { value: def.defaultValue, reason: def.rollout ? StandardResolutionReasons.SPLIT : StandardResolutionReasons.STATIC };
  }

  async function evaluate<T extends JsonValue>(key: string, fallback: T, context: EvaluationContext): Promise<ResolutionDetails<T>> {
    const found = await resolve(key, context);
    if (!found) return { value: fallback, reason: StandardResolutionReasons.ERROR, errorCode: ErrorCode.FLAG_NOT_FOUND };
    if (jsonType(found.value) !== jsonType(fallback)) {
      return {
        value: fallback,
        reason: StandardResolutionReasons.ERROR,
        errorCode: ErrorCode.TYPE_MISMATCH,
        errorMessage: `flag ${key} is ${jsonType(found.value)}, asked as ${jsonType(fallback)}`,
      };
    }
    if (found.rolledOut) {
      const store = currentRequestContext()?.exposures as Exposures | undefined;
      if (store) (store.keys ??= new Set()).add(key);
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

  /** One operator change: row, log entry and this instance's cache together. */
  async function change(key: string, action: string, actor: string, patch: (def: FlagDefinition) => repo.FlagPatch | null) {
    const res = await repo.changeFlag(db.owner, key, (before) => {
      if (!before) return null;
      const p = patch(toDefinition(before));
      return p ? { patch: p, action, actor } : null;
    });
    definitions.delete(key);
    return res ? toDefinition(res.after) : undefined;
  }

  /** rollout_full_since: set when a rollout reaches 100 %, kept while it stays there (the stale report). */
  const fullSince = (def: FlagDefinition, percentage: number | undefined) =>
    percentage === 100 ? (def.rolloutFullSince ?? new Date()) : null;

  const flags: Flags = {
    client,
    provider,
    async list() {
      return (await repo.listFlags(db)).map(toDefinition);
    },
    async get(key) {
      const row = await repo.findFlag(db, key);
      return row ? toDefinition(row) : undefined;
    },
    async define(key, defaultValue, description = '', actor = SYSTEM) {
      const res = await repo.changeFlag(db.owner, key, (before) => ({
        action: before ? 'updated' : 'created',
        actor,
        patch: { default_value: JSON.stringify(defaultValue), description },
      }));
      definitions.delete(key);
      return toDefinition(res!.after);
    },
    async setOverride(tenantId, key, value, actor = SYSTEM) {
      await repo.upsertOverride(db, tenantId, key, value);
      await repo.logOverrideChange(db.owner, key, 'override_set', actor, { orgId: tenantId, value });
      overrides.delete(`${tenantId}:${key}`);
    },
    async clearOverride(tenantId, key, actor = SYSTEM) {
      const deleted = await repo.deleteOverride(db, tenantId, key);
      if (deleted) await repo.logOverrideChange(db.owner, key, 'override_cleared', actor, { orgId: tenantId });
      overrides.delete(`${tenantId}:${key}`);
      return deleted;
    },
    setRules(key, rules, actor) {
      return change(key, 'rules_set', actor, () => ({ rules: JSON.stringify(rules) }));
    },
    setRollout(key, rollout, actor) {
      return change(key, rollout ? 'rollout_set' : 'rollout_removed', actor, (def) => ({
        rollout: rollout ? JSON.stringify(rollout) : null,
        ramp: null,
        rollout_full_since: fullSince(def, rollout?.percentage),
      }));
    },
    ramp(key, input, actor) {
      const r = startRamp(input.steps, input.everyMinutes, input.guard, new Date());
      const rollout: Rollout = { value: input.value, percentage: input.steps[0]!, bucketBy: input.bucketBy };
      return change(key, 'ramp_started', actor, (def) => ({
        rollout: JSON.stringify(rollout),
        ramp: input.steps.length > 1 ? JSON.stringify(r) : null,
        rollout_full_since: fullSince(def, rollout.percentage),
      }));
    },
    pauseRamp(key, paused, actor, reason) {
      return change(key, paused ? 'ramp_paused' : 'ramp_resumed', actor, (def) => {
        if (!def.ramp || def.ramp.paused === paused) return null;
        const now = new Date();
        // Resuming restarts the step's clock and its guard window: the errors that paused it are not counted again.
        const ramp: Ramp = paused
          ? { ...def.ramp, paused, pausedReason: reason ?? 'paused by an operator' }
          : { ...def.ramp, paused, pausedReason: undefined, stepStartedAt: now.toISOString(), nextAt: new Date(now.getTime() + def.ramp.everyMinutes * 60_000).toISOString() };
        return { ramp: JSON.stringify(ramp) };
      });
    },
    kill(key, killed, actor) {
      return change(key, killed ? 'killed' : 'unkilled', actor, (def) => ({
        killed,
        ramp: def.ramp && killed ? JSON.stringify({ ...def.ramp, paused: true, pausedReason: 'kill switch' }) : def.ramp ? JSON.stringify(def.ramp) : null,
      }));
    },
    async changes(key, limit = 100) {
      return repo.listChanges(db, key, limit);
    },
    async stale(days) {
      return (await repo.staleFlags(db, days)).map(toDefinition);
    },
    async tickRamps(now = new Date()) {
      const done: Awaited<ReturnType<Flags['tickRamps']>> = [];
      for (const key of await repo.ramping(db)) {
        const def = await flags.get(key);
        if (!def?.ramp || !def.rollout) continue;
        const exposure = await repo.exposureSince(db, key, new Date(def.ramp.stepStartedAt));
        const decision = rampTick(def.ramp, exposure, now);
        if (decision.kind === 'pause') {
          await flags.pauseRamp(key, true, 'system:ramp-guard', decision.reason);
          done.push({ key, action: 'paused', reason: decision.reason });
        } else if (decision.kind === 'advance') {
          const rollout = { ...def.rollout, percentage: decision.percentage };
          await change(key, 'ramp_advanced', 'system:ramp', (current) =>
            // Re-checked under the row lock: an operator may have paused, killed or replaced the ramp meanwhile.
            current.ramp?.step !== def.ramp!.step || current.ramp.paused || current.killed
              ? null
              : {
                  rollout: JSON.stringify(rollout),
                  ramp: decision.done ? null : JSON.stringify(decision.ramp),
                  rollout_full_since: fullSince(current, decision.percentage),
                },
          );
          done.push({ key, action: 'advanced', percentage: decision.percentage });
        }
      }
      return done;
    },
    trackExposures(exposures, fn) {
      return runWithContextField('exposures', exposures, fn);
    },
    recordOutcome(exposures, failed) {
      if (!exposures.keys) return;
      for (const key of exposures.keys) counts.add(key, { requests: 1, errors: failed ? 1 : 0 });
    },
    async pruneExposures(days) {
      await repo.deleteExposuresBefore(db, new Date(Date.now() - days * 86_400_000));
    },
    async flushExposures() {
      await counts.flush();
    },
    async close() {
      await counts.stop();
      definitions.clear();
      overrides.clear();
    },
  };
  counts.start(opts.flushMs ?? 10_000);
  return flags;
}
