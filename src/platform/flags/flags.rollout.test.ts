import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { bucketOf, inRollout, matchRule, rampTick, startRamp } from './flags.rollout.ts';

describe('deterministic bucketing', () => {
  it('a key always lands in the same bucket, and a percentage includes every smaller one (monotone ramps)', () => {
    fc.assert(
      fc.property(fc.uuid(), fc.integer({ min: 0, max: 10_000 }), fc.integer({ min: 0, max: 10_000 }), (org, a, b) => {
        expect(bucketOf('f', org)).toBe(bucketOf('f', org));
        const [lo, hi] = a <= b ? [a / 100, b / 100] : [b / 100, a / 100];
        const at = (percentage: number) => inRollout('f', { value: true, percentage, bucketBy: 'org' }, { tenantId: org });
        if (at(lo)) expect(at(hi)).toBe(true); // raising the percentage never takes anyone out
      }),
    );
  });

  it('splits close to the percentage over many orgs, independently per flag', () => {
    const orgs = Array.from({ length: 10_000 }, (_, i) => `org-${i}`);
    const share = (flag: string, pct: number) =>
      orgs.filter((o) => inRollout(flag, { value: true, percentage: pct, bucketBy: 'org' }, { tenantId: o })).length / orgs.length;
    expect(share('a', 10)).toBeGreaterThan(0.09);
    expect(share('a', 10)).toBeLessThan(0.11);
    expect(share('a', 0)).toBe(0);
    expect(share('a', 100)).toBe(1);
    const inA = new Set(orgs.filter((o) => inRollout('a', { value: true, percentage: 10, bucketBy: 'org' }, { tenantId: o })));
    const both = orgs.filter((o) => inA.has(o) && inRollout('b', { value: true, percentage: 10, bucketBy: 'org' }, { tenantId: o })).length;
    expect(both / orgs.length).toBeLessThan(0.02); // ≈1 %: flag b does not pick the same orgs as flag a
  });

  it('buckets by user when asked, and a context without the key is never in the rollout', () => {
    const rollout = { value: true, percentage: 100, bucketBy: 'user' as const };
    expect(inRollout('f', rollout, { userId: 'u1' })).toBe(true);
    expect(inRollout('f', rollout, { tenantId: 'org-only' })).toBe(false);
    expect(inRollout('f', { ...rollout, bucketBy: 'org' }, {})).toBe(false);
  });
});

describe('targeting rules', () => {
  const rules = [
    { value: 'beta', orgIds: ['o1'] },
    { value: 'pro', plans: ['pro', 'enterprise'], attributes: { country: ['DE'] } },
  ];
  it('first match wins; every condition of a rule must hold', () => {
    expect(matchRule(rules, { tenantId: 'o1', plan: 'pro', country: 'DE' })?.value).toBe('beta');
    expect(matchRule(rules, { tenantId: 'o2', plan: 'pro', country: 'DE' })?.value).toBe('pro');
    expect(matchRule(rules, { tenantId: 'o2', plan: 'pro', country: 'FR' })).toBeUndefined();
    expect(matchRule(rules, { tenantId: 'o2', plan: 'free', country: 'DE' })).toBeUndefined();
    expect(matchRule(rules, { tenantId: 'o2', plan: 'pro', country: { nested: true } as never })).toBeUndefined();
  });
});

describe('ramps', () => {
  const t0 = new Date('2026-12-01T10:00:00Z');
  const ramp = startRamp([1, 10, 50, 100], 30, { maxErrorRate: 0.02, minRequests: 100 }, t0);
  const at = (min: number) => new Date(t0.getTime() + min * 60_000);

  it('waits until the step is due, then advances one step; the last step ends the ramp', () => {
    expect(rampTick(ramp, { requests: 0, errors: 0 }, at(29))).toEqual({ kind: 'wait' });
    const one = rampTick(ramp, { requests: 500, errors: 1 }, at(30));
    expect(one).toMatchObject({ kind: 'advance', percentage: 10, done: false });
    const r1 = (one as { ramp: typeof ramp }).ramp;
    expect(r1.nextAt).toBe(at(60).toISOString());
    const two = rampTick(r1, { requests: 0, errors: 0 }, at(60));
    const r2 = (two as { ramp: typeof ramp }).ramp;
    expect(rampTick(r2, { requests: 0, errors: 0 }, at(90))).toMatchObject({ kind: 'advance', percentage: 100, done: true });
  });

  it('pauses when the guard trips (even before the step is due), not on too few requests', () => {
    expect(rampTick(ramp, { requests: 99, errors: 99 }, at(5))).toEqual({ kind: 'wait' });
    const tripped = rampTick(ramp, { requests: 200, errors: 5 }, at(5));
    expect(tripped).toEqual({ kind: 'pause', reason: "error rate 2.5 % over 200 requests exceeds the guard's 2 %" });
    expect(rampTick({ ...ramp, paused: true }, { requests: 200, errors: 50 }, at(40))).toEqual({ kind: 'wait' });
  });
});
