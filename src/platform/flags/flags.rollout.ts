import { createHash } from 'node:crypto';
import type { EvaluationContext, JsonValue } from '@openfeature/server-sdk';

/**
 * The pure part of gradual rollout: which value a context gets, and how a ramp moves. No I/O, so the
 * rules are unit-tested exhaustively and every instance computes the same answer.
 */

/** A targeting rule: every condition given must hold; the first matching rule's value wins. */
export interface Rule {
  value: JsonValue;
  orgIds?: string[];
  plans?: string[];
  /** Context attribute → accepted values (e.g. { country: ['DE', 'FR'] }). */
  attributes?: Record<string, Array<string | number | boolean>>;
}

export type BucketBy = 'org' | 'user';

/** The share of contexts (by org or by user) that get `value` instead of the default. */
export interface Rollout {
  value: JsonValue;
  /** 0–100, two decimals. */
  percentage: number;
  bucketBy: BucketBy;
}

/** A scheduled ramp of the rollout's percentage, paused by the guard when the rolled-out value fails too often. */
export interface Ramp {
  steps: number[];
  everyMinutes: number;
  step: number;
  stepStartedAt: string;
  nextAt: string;
  paused: boolean;
  pausedReason?: string;
  guard: { maxErrorRate: number; minRequests: number };
}

/** Deterministic: the same flag and key land in the same of 10,000 buckets on every instance, forever. */
export function bucketOf(flagKey: string, bucketKey: string): number {
  return createHash('sha256').update(`${flagKey}\u0000${bucketKey}`).digest().readUInt32BE(0) % 10_000;
}

export function inRollout(flagKey: string, rollout: Rollout, context: EvaluationContext): boolean {
  const key = rollout.bucketBy === 'user' ? (context.userId ?? context.targetingKey) : (context.tenantId ?? context.targetingKey);
  if (typeof key !== 'string' || key === '') return false;
  return bucketOf(flagKey, key) < Math.round(rollout.percentage * 100);
}

export function matchRule(rules: Rule[], context: EvaluationContext): Rule | undefined {
  return rules.find((r) => {
    if (r.orgIds && !r.orgIds.includes(String(context.tenantId ?? ''))) return false;
    if (r.plans && !r.plans.includes(String(context.plan ?? ''))) return false;
    for (const [name, accepted] of Object.entries(r.attributes ?? {})) {
      const v = context[name];
      if (!(typeof v === 'string' || typeof v === 'number' || typeof v === 'boolean') || !accepted.includes(v)) return false;
    }
    return true;
  });
}

export interface Exposure {
  requests: number;
  errors: number;
}

export type RampDecision =
  | { kind: 'wait' }
  | { kind: 'pause'; reason: string }
  | { kind: 'advance'; percentage: number; ramp: Ramp; done: boolean };

/**
 * One tick of a ramp at `now`, given the exposure of the rolled-out value since the current step began:
 * pause when the guard trips (at any time, not only when a step is due), else advance when due.
 */
export function rampTick(ramp: Ramp, exposure: Exposure, now: Date): RampDecision {
  if (ramp.paused) return { kind: 'wait' };
  const rate = exposure.requests > 0 ? exposure.errors / exposure.requests : 0;
  if (exposure.requests >= ramp.guard.minRequests && rate > ramp.guard.maxErrorRate) {
    const pct = (x: number) => `${Math.round(x * 10_000) / 100} %`;
    return { kind: 'pause', reason: `error rate ${pct(rate)} over ${exposure.requests} requests exceeds the guard's ${pct(ramp.guard.maxErrorRate)}` };
  }
  if (now.getTime() < Date.parse(ramp.nextAt)) return { kind: 'wait' };
  const step = ramp.step + 1;
  if (step >= ramp.steps.length) return { kind: 'wait' };
  const next = new Date(now.getTime() + ramp.everyMinutes * 60_000).toISOString();
  const done = step === ramp.steps.length - 1;
  return { kind: 'advance', percentage: ramp.steps[step]!, done, ramp: { ...ramp, step, stepStartedAt: now.toISOString(), nextAt: next } };
}

export function startRamp(steps: number[], everyMinutes: number, guard: Ramp['guard'], now: Date): Ramp {
  return {
    steps,
    everyMinutes,
    step: 0,
    stepStartedAt: now.toISOString(),
    nextAt: new Date(now.getTime() + everyMinutes * 60_000).toISOString(),
    paused: false,
    guard,
  };
}
