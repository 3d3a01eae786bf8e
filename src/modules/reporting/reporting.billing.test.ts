import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { addMember, signup, type SignedUp } from '../../../test/helpers/auth.ts';
import { adminAndMember } from '../../../test/helpers/jobs.ts';
import { createTestPlatform, type TestPlatform } from '../../../test/helpers/test-platform.ts';

/**
 * Billing reports over subscriptions created through the billing API and moved with test clocks:
 * exact MRR movements (new, expansion on an upgrade, contraction on a downgrade, churn on a cancel),
 * per currency, for an org's own billing and across orgs for platform admins, as JSON and CSV.
 */
describe(`billing reports (${process.env.TEST_DATABASE_URL ? 'postgres' : 'pglite'})`, () => {
  let t: TestPlatform;
  let admin: { authorization: string };
  let plainUser: { authorization: string };
  let a: SignedUp;
  let b: SignedUp;
  let c: SignedUp;
  let viewer: SignedUp;
  const plans: Record<string, string> = {};

  const req = (method: string, url: string, headers: object, payload?: object) =>
    t.app.inject({ method: method as 'GET', url, headers: headers as Record<string, string>, ...(payload ? { payload } : {}) });
  const ok = async (method: string, url: string, headers: object, payload?: object) => {
    const res = await req(method, url, headers, payload);
    if (res.statusCode >= 300) throw new Error(`${method} ${url}: ${res.statusCode} ${res.body}`);
    return res.json();
  };
  const clock = (o: SignedUp, iso: string) => ok('POST', `/v1/orgs/${o.orgId}/billing/test-clock`, o.auth, { frozenTime: iso });
  const sub = (o: SignedUp, action: string, body?: object) => ok('POST', `/v1/orgs/${o.orgId}/billing/subscription${action}`, o.auth, body ?? {});
  const range = 'from=2030-01-01T00:00:00Z&to=2030-04-01T00:00:00Z';

  beforeAll(async () => {
    t = await createTestPlatform();
    ({ admin, member: plainUser } = await adminAndMember(t));
    const product = await ok('POST', '/v1/admin/billing/products', admin, { key: 'rp', name: 'Reports' });
    const plan = async (key: string, rank: number, prices: object[]) => {
      const p = await ok('POST', '/v1/admin/billing/plans', admin, { productId: product.id, key, name: key.toUpperCase(), rank });
      for (const price of prices) await ok('POST', `/v1/admin/billing/plans/${p.id}/prices`, admin, { interval: 'month', model: 'flat', ...price });
      plans[key] = p.id;
    };
    await plan('starter', 10, [{ currency: 'USD', flatAmount: 3000, trialDays: 14 }]);
    await plan('pro', 20, [
      { currency: 'USD', flatAmount: 9000 },
      { currency: 'EUR', interval: 'year', flatAmount: 120_001 }, // MRR 10,000 (rounded), ARR exact
    ]);

    // A: subscribes, upgrades, downgrades at period end, cancels now.
    a = await signup(t.app, { organizationName: 'A' });
    await clock(a, '2030-01-10T00:00:00.000Z');
    await sub(a, '', { planId: plans.starter, trial: false });
    await clock(a, '2030-02-15T00:00:00.000Z'); // renewed on 02-10 (no movement)
    await sub(a, '/change', { planId: plans.pro }); // upgrade now
    await sub(a, '/change', { planId: plans.starter }); // downgrade at period end (03-10)
    await clock(a, '2030-03-20T00:00:00.000Z');
    await sub(a, '/cancel', { atPeriodEnd: false });
    await ok('POST', `/v1/orgs/${a.orgId}/usage-events`, a.auth, { events: [{ key: 'u1', metric: 'api.calls', value: 2.5 }, { key: 'u2', metric: 'api.calls', value: 5 }] });

    // B: a trial that converts on 01-19 and stays.
    b = await signup(t.app, { organizationName: 'B' });
    await clock(b, '2030-01-05T00:00:00.000Z');
    await sub(b, '', { planId: plans.starter });
    await clock(b, '2030-03-20T00:00:00.000Z');

    // C: EUR, yearly.
    c = await signup(t.app, { organizationName: 'C' });
    await ok('PATCH', `/v1/orgs/${c.orgId}/billing/customer`, c.auth, { currency: 'EUR' });
    await clock(c, '2030-02-01T00:00:00.000Z');
    await sub(c, '', { planId: plans.pro, interval: 'year' });
    // The audit sequencer (a worker schedule) chains each org's log: the platform report finds orgs by it.
    for (const o of [a, b, c]) await t.modules.audit.sequence(o.orgId);
    viewer = await signup(t.app);
    await addMember(t.app, a, a.orgId, viewer, 'viewer');
  });
  afterAll(async () => t?.close());

  it("an org's own MRR movements are exact; churn, usage; CSV; permissions", async () => {
    const mrr = await ok('GET', `/v1/orgs/${a.orgId}/reports/billing/mrr?${range}`, a.auth);
    expect(mrr).toMatchObject({ name: 'mrr', scope: 'org', from: '2030-01-01T00:00:00.000Z', to: '2030-04-01T00:00:00.000Z' });
    const pick = (r: Record<string, unknown>) => [r.month, r.currency, r.mrr_start, r.new, r.expansion, r.contraction, r.churned, r.net, r.mrr_end];
    expect(mrr.rows.map(pick)).toEqual([
      ['2030-01', 'USD', 0, 3000, 0, 0, 0, 3000, 3000],
      ['2030-02', 'USD', 3000, 0, 6000, 0, 0, 6000, 9000],
      ['2030-03', 'USD', 9000, 0, 0, 6000, 3000, -9000, 0],
    ]);
    const churn = await ok('GET', `/v1/orgs/${a.orgId}/reports/billing/churn?${range}`, a.auth);
    expect(churn.rows[2]).toMatchObject({ month: '2030-03', subscriptions_start: 1, subscriptions_churned: 1, subscription_churn_rate: '1.0000', mrr_start: 9000, mrr_churned: 3000, mrr_contraction: 6000, mrr_churn_rate: '0.3333', gross_mrr_churn_rate: '1.0000', customers_churned: 1 });
    expect(churn.rows[1]).toMatchObject({ month: '2030-02', subscriptions_churned: 0, subscription_churn_rate: '0.0000' });
    const usage = await ok('GET', `/v1/orgs/${a.orgId}/reports/billing/usage?from=2020-01-01T00:00:00Z&to=2040-01-01T00:00:00Z`, a.auth).catch(() => null);
    expect(usage).toBeNull(); // more than 36 months
    const anyUsage = await ok('GET', `/v1/orgs/${a.orgId}/reports/billing/usage`, a.auth);
    expect(anyUsage.rows).toEqual([expect.objectContaining({ metric: 'api.calls', events: 2, sum: '7.5', max: '5' })]);

    const csv = await req('GET', `/v1/orgs/${a.orgId}/reports/billing/mrr?${range}&format=csv`, a.auth);
    expect(csv.statusCode).toBe(200);
    expect(csv.headers['content-type']).toContain('text/csv');
    expect(csv.headers['content-disposition']).toBe('attachment; filename="billing-mrr-2030-01-01-2030-04-01.csv"');
    expect(csv.body.trim().split('\n')).toEqual([
      'month,currency,mrr_start,new,expansion,contraction,churned,net,mrr_end,arr_end,paying_subscriptions_end',
      '2030-01,USD,0,3000,0,0,0,3000,3000,36000,1',
      '2030-02,USD,3000,0,6000,0,0,6000,9000,108000,1',
      '2030-03,USD,9000,0,0,6000,3000,-9000,0,0,0',
    ]);

    // billing:read is needed; another org's billing is not reachable; bad input.
    expect((await req('GET', `/v1/orgs/${a.orgId}/reports/billing/mrr`, viewer.auth)).statusCode).toBe(403);
    expect([403, 404]).toContain((await req('GET', `/v1/orgs/${a.orgId}/reports/billing/mrr`, b.auth)).statusCode);
    expect((await req('GET', `/v1/orgs/${a.orgId}/reports/billing/nope`, a.auth)).statusCode).toBe(400);
    expect((await req('GET', `/v1/orgs/${a.orgId}/reports/billing/mrr?format=xlsx`, a.auth)).statusCode).toBe(400);
    expect((await req('GET', `/v1/orgs/${a.orgId}/reports/billing/mrr?from=2030-02-01T00:00:00Z&to=2030-01-01T00:00:00Z`, a.auth)).statusCode).toBe(400);
  });

  it('platform admins see the business across orgs, per currency (never summed across currencies)', async () => {
    expect((await req('GET', `/v1/admin/reports/billing/mrr?${range}`, plainUser)).statusCode).toBe(403);
    const mrr = await ok('GET', `/v1/admin/reports/billing/mrr?${range}`, admin);
    expect(mrr.scope).toBe('platform');
    const row = (month: string, currency: string) => mrr.rows.find((r: { month: string; currency: string }) => r.month === month && r.currency === currency);
    expect(row('2030-01', 'USD')).toMatchObject({ mrr_start: 0, new: 6000, mrr_end: 6000, paying_subscriptions_end: 2 });
    expect(row('2030-02', 'USD')).toMatchObject({ mrr_start: 6000, expansion: 6000, mrr_end: 12000 });
    expect(row('2030-03', 'USD')).toMatchObject({ mrr_start: 12000, contraction: 6000, churned: 3000, mrr_end: 3000, arr_end: 36000 });
    expect(row('2030-01', 'EUR')).toMatchObject({ mrr_start: 0, new: 0, mrr_end: 0 });
    expect(row('2030-02', 'EUR')).toMatchObject({ new: 10000, mrr_end: 10000, arr_end: 120001 });
    expect(row('2030-03', 'EUR')).toMatchObject({ mrr_start: 10000, mrr_end: 10000, net: 0 });

    const subs = await ok('GET', '/v1/admin/reports/billing/subscriptions', admin);
    expect(subs.rows).toEqual([
      { plan: 'pro', plan_name: 'PRO', status: 'active', currency: 'EUR', subscriptions: 1, customers: 1, mrr: 10000, arr: 120001 },
      { plan: 'starter', plan_name: 'STARTER', status: 'active', currency: 'USD', subscriptions: 1, customers: 1, mrr: 3000, arr: 36000 },
    ]);
    const trials = await ok('GET', `/v1/admin/reports/billing/trial-conversion?${range}`, admin);
    expect(trials.rows[0]).toEqual({ month: '2030-01', trials_ended: 1, converted: 1, not_converted: 0, conversion_rate: '1.0000' });
    const csv = await req('GET', `/v1/admin/reports/billing/subscriptions?format=csv`, admin);
    expect(csv.body.split('\n')[0]).toBe('plan,plan_name,status,currency,subscriptions,customers,mrr,arr');
  });
});
