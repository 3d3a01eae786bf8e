import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { signup } from '../helpers/auth.ts';
import { createTestPlatform, type TestPlatform } from '../helpers/test-platform.ts';

/**
 * Every input a schema accepts must fit through the outbox: a 20,000-character description of control
 * characters (each escaped to six bytes in JSON) makes events well above the old 64 KiB guard.
 */
describe('valid requests at the input limits are never a 500', () => {
  let t: TestPlatform;
  beforeAll(async () => {
    t = await createTestPlatform({ env: { RATE_LIMIT_PRINCIPAL: '100000', RATE_LIMIT_ORG: '100000' } });
  });
  afterAll(() => t?.close());

  it('a task description of 20,000 control characters is created and updated, and its events are relayed', async () => {
    const owner = await signup(t.app);
    const project = await t.app.inject({ method: 'POST', url: `/v1/orgs/${owner.orgId}/projects`, headers: owner.auth, payload: { key: 'BIG', name: 'Big' } });
    expect(project.statusCode).toBe(201);
    const description = '\u0001'.repeat(20_000);
    const created = await t.app.inject({
      method: 'POST',
      url: `/v1/orgs/${owner.orgId}/projects/${project.json().id}/tasks`,
      headers: { ...owner.auth, 'idempotency-key': 'big-task' },
      payload: { title: 'Big', description },
    });
    expect(created.statusCode).toBe(201);
    expect(created.json().description).toBe(description);
    const updated = await t.app.inject({
      method: 'PATCH',
      url: `/v1/orgs/${owner.orgId}/tasks/${created.json().id}`,
      headers: owner.auth,
      payload: { description: '\u0002'.repeat(20_000) },
    });
    expect(updated.statusCode).toBe(200);
    expect(await t.events.relayOnce()).toBeGreaterThan(0);
  });
});
