import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestPlatform, type TestPlatform } from '../../../test/helpers/test-platform.ts';
import { createModules } from '../../main.ts';
import type { Authenticator } from '../http/auth.ts';
import { asPlugin } from '../http/module-routes.ts';
import { AppError } from '../http/errors.ts';
import { newId } from '../ids.ts';
import type { App } from '../http/server.ts';

const authenticator: Authenticator = {
  async authenticate(req) {
    return req.headers.authorization === 'Bearer operator' ? { kind: 'user', userId: '0190a4c2-0000-7000-8000-0000000000aa', isPlatformAdmin: true } : null;
  },
  resolveAccess: async () => null,
};
const operator = { authorization: 'Bearer operator' };

/** A product route behind the flag: the new code path (flag on) fails when asked to, the old one never does. */
const probe = asPlugin(async (app: App) => {
  app.get('/v1/probe/:org', { config: { public: true } }, async (req) => {
    const { org } = req.params as { org: string };
    const { flags } = probeDeps;
    const on = await flags!.client.getBooleanValue('checkout.v2', false, { tenantId: org });
    if (on && (req.query as { fail?: string }).fail) throw new AppError('PROBE.BROKEN', 500, 'new checkout failed');
    return { on };
  });
});
const probeDeps: { flags?: TestPlatform['flags'] } = {};

describe('gradual rollout: ramps, guard, kill switch, change log, stale report', () => {
  let p: TestPlatform;
  const orgs = Array.from({ length: 120 }, () => newId());
  const put = (url: string, payload: object) => p.app.inject({ method: 'PUT', url, headers: operator, payload });
  /** Moves the ramp's clock back, as if its current step had started `ms` earlier (instead of waiting). */
  const rewind = async (key: string, ms: number) => {
    const row = await p.testDb.db.owner.selectFrom('feature_flags').select('ramp').where('key', '=', key).executeTakeFirstOrThrow();
    const ramp = row.ramp as { stepStartedAt: string; nextAt: string };
    const back = (iso: string) => new Date(Date.parse(iso) - ms).toISOString();
    const moved = { ...ramp, stepStartedAt: back(ramp.stepStartedAt), nextAt: back(ramp.nextAt) };
    await p.testDb.db.owner.updateTable('feature_flags').set({ ramp: JSON.stringify(moved) }).where('key', '=', key).execute();
  };

  beforeAll(async () => {
    p = await createTestPlatform({
      authenticator,
      // One client IP sends every probe; the limiter is not what this tests.
      env: { RATE_LIMIT_ENABLED: 'false' },
      compose: (platform) => {
        const m = createModules(platform);
        return { ...m, routes: [...m.routes, { name: 'probe', prefix: '', plugin: probe }] };
      },
    });
    probeDeps.flags = p.flags;
  });
  afterAll(async () => p?.close());

  it('ramps step by step on schedule, stable per org, and pauses itself when the rolled-out value fails', async () => {
    expect((await put('/v1/admin/flags/checkout.v2', { defaultValue: false, description: 'New checkout' })).statusCode).toBe(200);
    const bad = await put('/v1/admin/flags/checkout.v2/ramp', { value: true, bucketBy: 'org', steps: [10, 5], everyMinutes: 1, guard: { maxErrorRate: 0.1, minRequests: 5 } });
    expect(bad.statusCode).toBe(422);
    expect((await put('/v1/admin/flags/checkout.v2/ramp', { value: 'yes', bucketBy: 'org', steps: [10], everyMinutes: 1, guard: { maxErrorRate: 0.1, minRequests: 5 } })).json().code).toBe('FLAGS.TYPE_MISMATCH');
    const started = await put('/v1/admin/flags/checkout.v2/ramp', { value: true, bucketBy: 'org', steps: [25, 50, 100], everyMinutes: 1, guard: { maxErrorRate: 0.02, minRequests: 5 } });
    expect(started.statusCode).toBe(200);
    expect(started.json()).toMatchObject({ rollout: { percentage: 25 }, ramp: { step: 0, paused: false } });

    const onAt = async () => {
      const res = await Promise.all(orgs.map((o) => p.app.inject({ url: `/v1/probe/${o}` })));
      return new Set(orgs.filter((_, i) => res[i]!.json().on));
    };
    const at25 = await onAt();
    expect(at25.size).toBeGreaterThan(12); // 25 % of 120 = 30, with room for chance
    expect(at25.size).toBeLessThan(50);
    expect(await onAt()).toEqual(at25); // stable: the same orgs on every evaluation

    // Not due yet: nothing moves. Due (a minute later): one step, and everyone at 25 % is still in.
    expect(await p.flags.tickRamps(new Date())).toEqual([]);
    await rewind('checkout.v2', 61_000);
    expect(await p.flags.tickRamps()).toEqual([{ key: 'checkout.v2', action: 'advanced', percentage: 50 }]);
    const at50 = await onAt();
    expect(at50.size).toBeGreaterThan(at25.size);
    for (const o of at25) expect(at50.has(o)).toBe(true);

    // The new code path fails for the orgs that have it: the guard sees it through the request outcomes.
    const inRollout = [...at50].slice(0, 10);
    for (const o of inRollout) expect((await p.app.inject({ url: `/v1/probe/${o}?fail=1` })).statusCode).toBe(500);
    await p.flags.flushExposures();
    // Not due for another minute: the guard pauses the ramp before its next step, not at it.
    const ticked = await p.flags.tickRamps();
    expect(ticked).toEqual([{ key: 'checkout.v2', action: 'paused', reason: expect.stringMatching(/^error rate .* exceeds the guard's 2 %$/) }]);
    const paused = (await p.app.inject({ url: '/v1/admin/flags', headers: operator })).json().data.find((f: { key: string }) => f.key === 'checkout.v2');
    expect(paused).toMatchObject({ rollout: { percentage: 50 }, ramp: { paused: true } });
    expect(await p.flags.tickRamps(new Date(Date.now() + 600_000))).toEqual([]); // paused: stays at 50 %
  });

  it('the kill switch turns the value off for everyone at once (overrides included), and every change is logged with its actor', async () => {
    const someone = [...orgs][0]!;
    expect((await put(`/v1/admin/flags/checkout.v2/orgs/${someone}`, { value: true })).statusCode).toBe(204);
    expect((await p.app.inject({ url: `/v1/probe/${someone}` })).json().on).toBe(true);
    const killed = await put('/v1/admin/flags/checkout.v2/kill', { killed: true });
    expect(killed.json()).toMatchObject({ killed: true });
    const res = await Promise.all(orgs.map((o) => p.app.inject({ url: `/v1/probe/${o}` })));
    expect(res.filter((r) => r.json().on)).toHaveLength(0);
    const resume = await p.app.inject({ method: 'POST', url: '/v1/admin/flags/checkout.v2/ramp/resume', headers: operator });
    expect(resume.statusCode).toBe(409);
    expect(resume.json().code).toBe('FLAGS.KILLED');

    const changes = (await p.app.inject({ url: '/v1/admin/flags/checkout.v2/changes', headers: operator })).json().data;
    expect(changes.map((c: { action: string }) => c.action)).toEqual(['killed', 'override_set', 'ramp_paused', 'ramp_advanced', 'ramp_started', 'created']);
    expect(changes[0]).toMatchObject({ actor: 'user:0190a4c2-0000-7000-8000-0000000000aa', before: { killed: false }, after: { killed: true } });
    expect(changes[2]).toMatchObject({ actor: 'system:ramp-guard' });
    expect((await p.app.inject({ url: '/v1/admin/flags/nope/changes', headers: operator })).statusCode).toBe(404);
  });

  it('targeting rules come before the rollout; the stale report lists flags at 100 % for longer than asked', async () => {
    await put('/v1/admin/flags/search.fast', { defaultValue: 'off' });
    const [a, b] = orgs as [string, string];
    expect((await put('/v1/admin/flags/search.fast/rules', { rules: [{ value: 'beta', orgIds: [a] }] })).statusCode).toBe(200);
    expect((await put('/v1/admin/flags/search.fast/rules', { rules: [{ value: 1, orgIds: [a] }] })).statusCode).toBe(422);
    expect((await put('/v1/admin/flags/search.fast/rollout', { value: 'on', percentage: 100, bucketBy: 'org' })).json()).toMatchObject({ rolloutFullSince: expect.any(String) });
    expect(await p.flags.client.getStringValue('search.fast', 'x', { tenantId: a })).toBe('beta');
    expect(await p.flags.client.getStringDetails('search.fast', 'x', { tenantId: b })).toMatchObject({ value: 'on', reason: 'SPLIT' });

    const stale = async (days: number) =>
      (await p.app.inject({ url: `/v1/admin/flags/stale?days=${days}`, headers: operator })).json().data.map((f: { key: string }) => f.key);
    expect(await stale(1)).toEqual([]);
    await p.testDb.db.owner.updateTable('feature_flags').set({ rollout_full_since: new Date(Date.now() - 40 * 86_400_000) }).where('key', '=', 'search.fast').execute();
    expect(await stale(30)).toEqual(['search.fast']);
    expect((await p.app.inject({ url: '/v1/admin/flags/stale?days=-1', headers: operator })).statusCode).toBe(400);
    expect((await p.app.inject({ url: '/v1/admin/flags/stale', headers: { authorization: 'Bearer nobody' } })).statusCode).toBe(401);
  });
});
