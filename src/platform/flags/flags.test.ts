import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestPlatform, type TestPlatform } from '../../../test/helpers/test-platform.ts';
import type { Authenticator } from '../http/auth.ts';
import { newId } from '../ids.ts';

const authenticator: Authenticator = {
  async authenticate(req) {
    const token = req.headers.authorization;
    if (token === 'Bearer operator') return { kind: 'user', userId: newId(), isPlatformAdmin: true };
    if (token === 'Bearer someone') return { kind: 'user', userId: newId(), isPlatformAdmin: false };
    return null;
  },
  resolveAccess: async () => null,
};
const operator = { authorization: 'Bearer operator' };

describe('feature flags (OpenFeature, Postgres-backed)', () => {
  let p: TestPlatform;
  const orgA = newId();
  const orgB = newId();

  beforeAll(async () => {
    p = await createTestPlatform({ authenticator });
  });
  afterAll(async () => p?.close());

  it('evaluates defaults, per-tenant overrides, unknown flags and type mismatches', async () => {
    const put = await p.app.inject({ method: 'PUT', url: '/v1/admin/flags/projects.board', headers: operator, payload: { defaultValue: false, description: 'New board' } });
    expect(put.statusCode).toBe(200);
    expect(put.json()).toMatchObject({ key: 'projects.board', defaultValue: false });
    const override = await p.app.inject({ method: 'PUT', url: `/v1/admin/flags/projects.board/orgs/${orgA}`, headers: operator, payload: { value: true } });
    expect(override.statusCode).toBe(204);

    const client = p.flags.client;
    // A targetingKey that is not an org id has no override: the default, not an evaluation error.
    expect(await client.getBooleanDetails('projects.board', true, { targetingKey: 'someone@example.com' })).toMatchObject({ value: false, reason: 'STATIC' });
    expect(await client.getBooleanValue('projects.board', false, { tenantId: orgA })).toBe(true);
    expect(await client.getBooleanValue('projects.board', true, { tenantId: orgB })).toBe(false);
    expect(await client.getBooleanValue('projects.board', true, {})).toBe(false);
    const unknown = await client.getBooleanDetails('nope', true, { tenantId: orgA });
    expect(unknown).toMatchObject({ value: true, errorCode: 'FLAG_NOT_FOUND' });
    const mismatch = await client.getStringDetails('projects.board', 'x', { tenantId: orgA });
    expect(mismatch).toMatchObject({ value: 'x', errorCode: 'TYPE_MISMATCH' });

    const del = await p.app.inject({ method: 'DELETE', url: `/v1/admin/flags/projects.board/orgs/${orgA}`, headers: operator });
    expect(del.statusCode).toBe(204);
    expect(await client.getBooleanValue('projects.board', true, { tenantId: orgA })).toBe(false);
    const list = await p.app.inject({ url: '/v1/admin/flags', headers: operator });
    expect(list.json().data.map((f: { key: string }) => f.key)).toContain('projects.board');
  });

  it('refuses bad input: unknown flag, wrong value type, bad key, missing value, missing override', async () => {
    const unknown = await p.app.inject({ method: 'PUT', url: `/v1/admin/flags/nope/orgs/${orgA}`, headers: operator, payload: { value: 1 } });
    expect(unknown.statusCode).toBe(404);
    await p.app.inject({ method: 'PUT', url: '/v1/admin/flags/limits.max', headers: operator, payload: { defaultValue: 10 } });
    const wrongType = await p.app.inject({ method: 'PUT', url: `/v1/admin/flags/limits.max/orgs/${orgA}`, headers: operator, payload: { value: 'ten' } });
    expect(wrongType.statusCode).toBe(422);
    expect(wrongType.json().code).toBe('FLAGS.TYPE_MISMATCH');
    const badKey = await p.app.inject({ method: 'PUT', url: '/v1/admin/flags/Bad%20Key', headers: operator, payload: { defaultValue: 1 } });
    expect(badKey.statusCode).toBe(400);
    const noValue = await p.app.inject({ method: 'PUT', url: '/v1/admin/flags/limits.max', headers: operator, payload: {} });
    expect(noValue.statusCode).toBe(400);
    const noOverride = await p.app.inject({ method: 'DELETE', url: `/v1/admin/flags/limits.max/orgs/${orgB}`, headers: operator });
    expect(noOverride.statusCode).toBe(404);
  });

  it('is for platform administrators only', async () => {
    expect((await p.app.inject({ url: '/v1/admin/flags' })).statusCode).toBe(401);
    expect((await p.app.inject({ url: '/v1/admin/flags', headers: { authorization: 'Bearer someone' } })).statusCode).toBe(403);
  });
});
