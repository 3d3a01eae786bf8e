import pino from 'pino';
import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { signup, type SignedUp } from '../../../test/helpers/auth.ts';
import { adminAndMember, waitFor } from '../../../test/helpers/jobs.ts';
import { createTestPlatform, type TestPlatform } from '../../../test/helpers/test-platform.ts';
import { createMemoryMailer } from '../notifications/index.ts';

/** Quotas over the API-request meter, billing e-mails, add-ons, time-weighted sums: one platform for the file. */
describe(`billing: quotas, e-mails, add-ons, time-weighted sums (${process.env.TEST_DATABASE_URL ? 'postgres' : 'pglite'})`, () => {
  let t: TestPlatform;
  let admin: { authorization: string };
  const plans: Record<string, string> = {};
  const mailer = createMemoryMailer(pino({ level: 'silent' }));

  const req = async (method: string, url: string, headers: object, payload?: object) => {
    const res = await t.app.inject({ method: method as 'GET', url, headers: headers as Record<string, string>, ...(payload ? { payload } : {}) });
    return { status: res.statusCode, body: res.body ? res.json() : null, headers: res.headers };
  };
  const ok = async (method: string, url: string, headers: object, payload?: object) => {
    const r = await req(method, url, headers, payload);
    if (r.status >= 300) throw new Error(`${method} ${url}: ${r.status} ${JSON.stringify(r.body)}`);
    return r.body;
  };
  const apiUsage = async (o: SignedUp) =>
    (await t.modules.billing.usage(o.orgId, { metric: 'api.requests', from: new Date(Date.now() - 86_400_000 * 40), to: new Date(Date.now() + 86_400_000 * 40), groupBy: 'total', aggregation: 'sum' })).data[0]?.value ?? 0;

  beforeAll(async () => {
    t = await createTestPlatform({ seams: { mailer } });
    ({ admin } = await adminAndMember(t));
    const product = await ok('POST', '/v1/admin/billing/products', admin, { key: 'plinth', name: 'Plinth' });
    const plan = async (key: string, rank: number, price: object) => {
      const p = await ok('POST', '/v1/admin/billing/plans', admin, { productId: product.id, key, name: key[0]!.toUpperCase() + key.slice(1), rank });
      await ok('POST', `/v1/admin/billing/plans/${p.id}/prices`, admin, { currency: 'USD', interval: 'month', ...price });
      plans[key] = p.id;
    };
    await plan('capped', 10, { model: 'flat', flatAmount: 1000, entitlements: { quotas: { 'api.requests': 5 }, enforcement: { 'api.requests': 'hard' } } });
    await plan('lenient', 11, { model: 'flat', flatAmount: 1000, entitlements: { quotas: { 'api.requests': 3 } } });
    await plan('bigger', 20, { model: 'flat', flatAmount: 5000, entitlements: { quotas: { 'api.requests': 1000 }, enforcement: { 'api.requests': 'hard' } } });
  });
  afterAll(async () => t?.close());

  it('API requests are metered per org; over a hard quota the next request is 402 BILLING.QUOTA_EXCEEDED, billing routes stay open, a bigger plan lifts it', async () => {
    const o = await signup(t.app);
    await ok('POST', `/v1/orgs/${o.orgId}/billing/subscription`, o.auth, { planId: plans.capped });
    const list = () => req('GET', `/v1/orgs/${o.orgId}/projects`, o.auth);
    for (let i = 0; i < 3; i++) expect((await list()).status).toBe(200);
    // Flushed: the ledger holds them; the next two still fit, counted from the cache plus unflushed counts.
    await t.modules.billing.apiMeter.flush();
    expect(await apiUsage(o)).toBe(3);
    for (let i = 0; i < 2; i++) expect((await list()).status).toBe(200);
    const denied = await list();
    expect(denied.status).toBe(402);
    expect(denied.headers['content-type']).toContain('application/problem+json');
    expect(denied.body).toMatchObject({ code: 'BILLING.QUOTA_EXCEEDED', metric: 'api.requests', quota: 5, usage: 5, plan: 'Capped' });
    // A refused request is not counted; billing routes are not guarded (the org can lift its quota).
    expect((await req('GET', `/v1/orgs/${o.orgId}/billing/entitlements`, o.auth)).status).toBe(200);
    await t.modules.billing.apiMeter.flush();
    expect(await apiUsage(o)).toBe(5);
    // 100 % of the quota crossed by the flush: the threshold event commits with the usage.
    const crossed = await sql<{ payload: any }>`select payload from outbox where tenant_id = ${o.orgId} and name = 'billing.usage_threshold_crossed' order by id`.execute(t.db.owner);
    expect(crossed.rows.map((r) => r.payload.threshold)).toEqual([80, 100]);
    await ok('POST', `/v1/orgs/${o.orgId}/billing/subscription/change`, o.auth, { planId: plans.bigger });
    expect((await list()).status).toBe(200);
  });

  it('a soft quota only notifies: requests over it pass', async () => {
    const o = await signup(t.app);
    await ok('POST', `/v1/orgs/${o.orgId}/billing/subscription`, o.auth, { planId: plans.lenient });
    for (let i = 0; i < 5; i++) expect((await req('GET', `/v1/orgs/${o.orgId}/projects`, o.auth)).status).toBe(200);
    await t.modules.billing.apiMeter.flush();
    expect(await apiUsage(o)).toBe(5);
  });
});

void waitFor;
