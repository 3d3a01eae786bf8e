import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { bearer, signup, type SignedUp } from '../../../test/helpers/auth.ts';
import { createTestPlatform, type TestPlatform } from '../../../test/helpers/test-platform.ts';
import { waitFor } from '../../../test/helpers/jobs.ts';

/** Cost attribution through the real modules: requests and tenant-transaction time land on the org that caused them. */
describe('per-tenant cost attribution', () => {
  let p: TestPlatform;
  let busy: SignedUp;
  let quiet: SignedUp;
  let admin: SignedUp;

  beforeAll(async () => {
    p = await createTestPlatform({ env: { RATE_LIMIT_ENABLED: 'false' } });
    [busy, quiet, admin] = [await signup(p.app), await signup(p.app), await signup(p.app)];
    await p.modules.identity.setPlatformAdmin(admin.email, true);
  });
  afterAll(async () => p?.close());

  it('ranks orgs by what they used; storage is measured per org from the distributed tables', async () => {
    const project = await p.app.inject({ method: 'POST', url: `/v1/orgs/${busy.orgId}/projects`, headers: busy.auth, payload: { name: 'Busy', key: 'BUSY' } });
    expect(project.statusCode).toBe(201);
    for (let i = 0; i < 15; i++) {
      const r = await p.app.inject({ method: 'POST', url: `/v1/orgs/${busy.orgId}/projects/${project.json().id}/tasks`, headers: busy.auth, payload: { title: `t${i}`, description: randomBytes(1_500).toString('base64') } });
      expect(r.statusCode).toBe(201);
    }
    await p.app.inject({ url: `/v1/orgs/${quiet.orgId}/projects`, headers: quiet.auth });
    // The worker handles the org's task events (webhooks, billing's meter, reports): job time lands on the org.
    await p.events.startWorker();
    try {
      await waitFor(async () => (await p.tenantCosts.flush(), await p.tenantCosts.top({ days: 1, by: 'jobs', limit: 5 })).find((r) => r.orgId === busy.orgId)?.jobs ?? 0, (n) => n >= 15);
    } finally {
      await p.events.stopWorker();
    }
    expect(await p.tenantCosts.measureStorage()).toBeGreaterThanOrEqual(2);

    const res = await p.app.inject({ url: '/v1/admin/tenant-costs?by=requests&days=1', headers: admin.auth });
    expect(res.statusCode).toBe(200);
    const rows = res.json().data as Array<{ orgId: string; requests: number; dbMs: number; storageBytes: number | null }>;
    const b = rows.find((r) => r.orgId === busy.orgId)!;
    const q = rows.find((r) => r.orgId === quiet.orgId)!;
    expect(rows[0]!.orgId).toBe(busy.orgId);
    expect(b.requests).toBe(16);
    expect(q.requests).toBe(1);
    expect(b.dbMs).toBeGreaterThan(0);
    expect(b.storageBytes).toBeGreaterThan(15 * 1_500); // base64 of random bytes does not compress
    expect(b.storageBytes!).toBeGreaterThan(q.storageBytes ?? 0);

    const byStorage = (await p.app.inject({ url: '/v1/admin/tenant-costs?by=storageBytes&limit=1', headers: admin.auth })).json().data;
    expect(byStorage.map((r: { orgId: string }) => r.orgId)).toEqual([busy.orgId]);
    const metrics = await p.app.inject({ url: '/metrics' });
    expect(metrics.body).toContain(`plinth_tenant_cost_top{org="${busy.orgId}",resource="requests"}`);
  });

  it('is for platform administrators, with bounded input', async () => {
    expect((await p.app.inject({ url: '/v1/admin/tenant-costs', headers: busy.auth })).statusCode).toBe(403);
    expect((await p.app.inject({ url: '/v1/admin/tenant-costs?by=nope', headers: admin.auth })).statusCode).toBe(400);
    expect((await p.app.inject({ url: '/v1/admin/tenant-costs?limit=1000', headers: admin.auth })).statusCode).toBe(400);
    expect((await p.app.inject({ url: '/v1/admin/tenant-costs', headers: bearer('forged') })).statusCode).toBe(401);
  });
});
