import pino from 'pino';
import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { signup, type SignedUp } from '../../../test/helpers/auth.ts';
import { adminAndMember, waitFor } from '../../../test/helpers/jobs.ts';
import { createTestPlatform, type TestPlatform } from '../../../test/helpers/test-platform.ts';
import { systemActor } from '../../platform/http/actor.ts';
import { newId } from '../../platform/ids.ts';
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
    await plan('trial', 5, { model: 'flat', flatAmount: 2000, trialDays: 14, entitlements: { limits: { projects: 1 }, quotas: { 'tasks.created': 2 } } });
    await ok('POST', '/v1/admin/billing/meters', admin, { key: 'seats.held', name: 'Seats held', aggregation: 'time_weighted_sum', property: null });
    await plan('tasks-capped', 12, { model: 'flat', flatAmount: 1000, entitlements: { quotas: { 'tasks.created': 2 }, enforcement: { 'tasks.created': 'hard' } } });
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

  it('a hard tasks quota: tasks are metered from their events, and the create over the quota is 402 before anything is written', async () => {
    const o = await signup(t.app);
    await ok('POST', `/v1/orgs/${o.orgId}/billing/subscription`, o.auth, { planId: plans['tasks-capped'] });
    const project = await ok('POST', `/v1/orgs/${o.orgId}/projects`, o.auth, { name: 'Quota', key: 'QTA' });
    const create = (title: string) => req('POST', `/v1/orgs/${o.orgId}/projects/${project.id}/tasks`, o.auth, { title });
    expect((await create('one')).status).toBe(201);
    expect((await create('two')).status).toBe(201);
    // Not metered yet (no worker has run the tasks' events): the instance counts what it admitted.
    const early = await create('three');
    expect(early.status).toBe(402);
    expect(early.body).toMatchObject({ code: 'BILLING.QUOTA_EXCEEDED', metric: 'tasks.created', quota: 2, usage: 2 });
    // Metered by billing's consumer from the tasks' events; the quota then reads the ledger and still refuses.
    await t.events.startWorker();
    const tasksUsed = async () =>
      (await t.modules.billing.usage(o.orgId, { metric: 'tasks.created', from: new Date(Date.now() - 86_400_000 * 40), to: new Date(Date.now() + 86_400_000 * 40), groupBy: 'total', aggregation: 'sum' })).data[0]?.value ?? 0;
    await waitFor(tasksUsed, (n) => Number(n) === 2);
    expect((await create('four')).status).toBe(402);
    const count = await sql<{ n: number }>`select count(*)::int as n from tasks where tenant_id = ${o.orgId}`.execute(t.db.owner);
    expect(count.rows[0]!.n).toBe(2);
  });

  it('a soft quota only notifies: requests over it pass', async () => {
    const o = await signup(t.app);
    await ok('POST', `/v1/orgs/${o.orgId}/billing/subscription`, o.auth, { planId: plans.lenient });
    for (let i = 0; i < 5; i++) expect((await req('GET', `/v1/orgs/${o.orgId}/projects`, o.auth)).status).toBe(200);
    await t.modules.billing.apiMeter.flush();
    expect(await apiUsage(o)).toBe(5);
  });

  it('e-mails: trial ending N days before (once, on the org\'s test clock) and limit reached (once per limit and period, quotas and limits)', async () => {
    const o = await signup(t.app);
    const email = `billing-${o.orgId}@example.com`;
    await ok('PATCH', `/v1/orgs/${o.orgId}/billing/customer`, o.auth, { email, currency: 'USD' });
    await ok('POST', `/v1/orgs/${o.orgId}/billing/test-clock`, o.auth, { frozenTime: '2031-03-01T00:00:00.000Z' });
    const sub = await ok('POST', `/v1/orgs/${o.orgId}/billing/subscription`, o.auth, { planId: plans.trial });
    expect(sub.trialEnd).toBe('2031-03-15T00:00:00.000Z');
    const events = async (name: string) => (await sql<{ payload: any }>`select payload from outbox where tenant_id = ${o.orgId} and name = ${name} order by id`.execute(t.db.owner)).rows.map((r) => r.payload);
    await ok('POST', `/v1/orgs/${o.orgId}/billing/test-clock`, o.auth, { frozenTime: '2031-03-11T23:00:00.000Z' });
    expect(await events('billing.trial_will_end')).toEqual([]);
    await ok('POST', `/v1/orgs/${o.orgId}/billing/test-clock`, o.auth, { frozenTime: '2031-03-12T06:00:00.000Z' });
    await ok('POST', `/v1/orgs/${o.orgId}/billing/test-clock`, o.auth, { frozenTime: '2031-03-13T06:00:00.000Z' });
    expect(await events('billing.trial_will_end')).toMatchObject([{ subscriptionId: sub.id, trialEnd: '2031-03-15T00:00:00.000Z', daysLeft: 3, planKey: 'trial' }]);
    // Quota: two 100 % crossings in one period (a second after usage was corrected) mail once.
    const ingest = (key: string, value = 1) => ok('POST', `/v1/orgs/${o.orgId}/usage-events`, o.auth, { key, metric: 'tasks.created', value });
    await ingest('t1', 2);
    expect((await events('billing.usage_threshold_crossed')).map((p) => p.threshold)).toEqual([80, 100]);
    // Limit: the plan allows 1 project; two refusals note the limit once.
    await ok('POST', `/v1/orgs/${o.orgId}/projects`, o.auth, { key: 'ONE', name: 'One' });
    for (const key of ['TWO', 'THREE']) expect((await req('POST', `/v1/orgs/${o.orgId}/projects`, o.auth, { key, name: key })).status).toBe(402);
    await waitFor(() => events('billing.limit_reached'), (e) => e.length === 1);
    await t.events.startWorker();
    try {
      await waitFor(async () => mailer.sent.filter((m) => m.to === email).length, (n) => n >= 3);
    } finally {
      await t.events.stopWorker();
    }
    const mails = mailer.sent.filter((m) => m.to === email);
    expect(mails.map((m) => m.subject).sort()).toEqual(['Your Trial trial ends in 3 days', 'Your organization reached its projects limit', 'Your organization reached its tasks.created quota for this period']);
    expect(new Set(mails.map((m) => m.messageId)).size).toBe(3);
    // A second refusal from another process (no in-memory memo) publishes again; the claim keeps it to one mail.
    await t.modules.billing.ingest({ ...systemActor('test'), tenantId: o.orgId }, [{ key: 't2', metric: 'tasks.created' }]);
    const [again] = await events('billing.limit_reached');
    await sql`insert into outbox (id, name, tenant_id, payload) values (${newId()}, 'billing.limit_reached', ${o.orgId}, ${JSON.stringify(again)}::jsonb)`.execute(t.db.owner);
    await t.events.startWorker();
    try {
      await new Promise((r) => setTimeout(r, 500));
      await t.events.sweepOnce(0);
    } finally {
      await t.events.stopWorker();
    }
    expect(mailer.sent.filter((m) => m.to === email)).toHaveLength(3);
    const notices = await sql<{ kind: string }>`select kind from billing_notices where tenant_id = ${o.orgId} order by kind`.execute(t.db.owner);
    expect(notices.rows.map((r) => r.kind)).toEqual(['limit_reached', 'limit_reached', 'trial_ending']);
  });

  it('time-weighted sums integrate the level over time exactly, whatever order the events arrived in', async () => {
    const o = await signup(t.app);
    // Hour-aligned: the usage route reads from the hour `from` falls in.
    const base = Math.floor(Date.now() / 3_600_000) * 3_600_000 - 10 * 3_600_000;
    const h = (hours: number) => new Date(base + hours * 3_600_000).toISOString();
    // Levels: 2 from h0, 5 from h3, 1 from h7.5; sent newest first.
    const r = await ok('POST', `/v1/orgs/${o.orgId}/usage-events`, o.auth, {
      events: [
        { key: 's3', metric: 'seats.held', timestamp: h(7.5), value: 1 },
        { key: 's1', metric: 'seats.held', timestamp: h(0), value: 2 },
        { key: 's2', metric: 'seats.held', timestamp: h(3), value: 5 },
      ],
    });
    expect(r.accepted).toBe(3);
    const q = (from: string, to: string, groupBy = 'total') =>
      ok('GET', `/v1/orgs/${o.orgId}/usage?metric=seats.held&from=${from}&to=${to}&groupBy=${groupBy}`, o.auth);
    const total = await q(h(0), h(9));
    expect(total.aggregation).toBe('time_weighted_sum');
    // 2×3 + 5×4.5 + 1×1.5 = 30 seat-hours.
    expect(total.data[0].value).toBe(30);
    // From inside a level: the level in force at `from` counts (5 × 0.5 from h7 to h7.5, then 1 × 0.5).
    expect((await q(h(7), h(8))).data[0].value).toBe(3);
    // A late event inside the window changes the past exactly where it belongs.
    await ok('POST', `/v1/orgs/${o.orgId}/usage-events`, o.auth, { key: 's0', metric: 'seats.held', timestamp: h(1), value: 4 });
    expect((await q(h(0), h(9))).data[0].value).toBe(2 * 1 + 4 * 2 + 5 * 4.5 + 1 * 1.5);
    // Grouped by hour: each hour's share; the shares sum to the total.
    const hourly = (await q(h(0), h(9), 'hour')).data as Array<{ value: number }>;
    expect(hourly.reduce((a, p) => a + p.value, 0)).toBeCloseTo(34, 9);
    expect((await q(h(-5), h(-1))).data).toEqual([]);
  });
  it('add-ons: a quantity on the subscription, prorated exactly on add and remove, granting entitlements at once, charged at renewal', async () => {
    const pack = await ok('POST', '/v1/admin/billing/addons', admin, { key: 'requests-pack', name: 'Requests pack', currency: 'USD', interval: 'month', amount: 1000, entitlements: { features: ['priority-support'], quotas: { 'api.requests': 10 } } });
    expect((await req('POST', '/v1/admin/billing/addons', admin, { key: 'requests-pack', name: 'Again', currency: 'USD', interval: 'month', amount: 1 })).body.code).toBe('BILLING.KEY_TAKEN');
    const o = await signup(t.app);
    expect((await req('POST', '/v1/admin/billing/addons', o.auth, { key: 'mine', name: 'Mine', currency: 'USD', interval: 'month', amount: 1 })).status).toBe(403);
    await ok('POST', `/v1/orgs/${o.orgId}/billing/test-clock`, o.auth, { frozenTime: '2031-04-01T00:00:00.000Z' });
    await ok('POST', `/v1/orgs/${o.orgId}/billing/subscription`, o.auth, { planId: plans.capped });
    await ok('POST', `/v1/orgs/${o.orgId}/billing/test-clock`, o.auth, { frozenTime: '2031-04-16T00:00:00.000Z' });
    const set = (quantity: number, id = pack.id) => req('PUT', `/v1/orgs/${o.orgId}/billing/subscription/addons/${id}`, o.auth, { quantity });
    const added = await set(2);
    expect(added.status).toBe(200);
    // Half of April left: half of 2 × 1000.
    expect(added.body.charges.map((c: any) => [c.kind, c.amount])).toEqual([['proration_charge', 1000]]);
    const snap = await ok('GET', `/v1/orgs/${o.orgId}/billing/entitlements`, o.auth);
    expect(snap.quotas['api.requests']).toBe(25);
    expect(snap.features).toContain('priority-support');
    expect((await ok('GET', `/v1/orgs/${o.orgId}/billing/addons`, o.auth)).data.map((a: any) => [a.addon.key, a.quantity])).toEqual([['requests-pack', 2]]);
    await ok('POST', `/v1/orgs/${o.orgId}/billing/test-clock`, o.auth, { frozenTime: '2031-04-21T00:00:00.000Z' });
    const down = await set(1);
    // 10 days left of 30: 2000 → 1000 credits 667 − 333 (largest remainder keeps every cent).
    expect(down.body.charges.reduce((a: number, c: any) => a + c.amount, 0)).toBe(-(Math.round((2000 * 10) / 30) - Math.round((1000 * 10) / 30)));
    expect((await ok('GET', `/v1/orgs/${o.orgId}/billing/entitlements`, o.auth)).quotas['api.requests']).toBe(15);
    // Renewal on May 1st charges the plan and the add-on for May.
    await ok('POST', `/v1/orgs/${o.orgId}/billing/test-clock`, o.auth, { frozenTime: '2031-05-01T01:00:00.000Z' });
    const charges = (await ok('GET', `/v1/orgs/${o.orgId}/billing/charges?limit=100`, o.auth)).data as Array<{ kind: string; amount: number; periodStart: string; priceId: string }>;
    expect(charges.filter((c) => c.periodStart === '2031-05-01T00:00:00.000Z').map((c) => c.amount).sort()).toEqual([1000, 1000]);
    // Invoicing what is owed takes the add-on's charges too: priced by the add-on's definition, a line with no
    // catalog price (this answered 500 before: the invoice looked the add-on's id up as a catalog price).
    const invoice = await req('POST', `/v1/orgs/${o.orgId}/billing/invoices`, o.auth, {});
    expect(invoice.status).toBe(201);
    const addonLines = invoice.body.lines.filter((l: any) => l.priceId === null);
    expect(addonLines.map((l: any) => l.amount).sort((a: number, b: number) => a - b)).toEqual(
      charges.filter((c) => c.priceId === pack.id).map((c) => c.amount).sort((a, b) => a - b),
    );
    const removed = await set(0);
    expect(removed.body.addon).toBeNull();
    expect((await ok('GET', `/v1/orgs/${o.orgId}/billing/entitlements`, o.auth)).quotas['api.requests']).toBe(5);
    // Bad input and unknown add-ons.
    expect((await set(-1)).status).toBe(400);
    expect((await set(1, '0190a4c2-0000-7000-8000-000000000000')).body.code).toBe('BILLING.ADDON_NOT_FOUND');
    const events = await sql<{ payload: any }>`select payload from outbox where tenant_id = ${o.orgId} and name = 'billing.addon_changed' order by id`.execute(t.db.owner);
    expect(events.rows.map((r) => r.payload.change)).toEqual(['added', 'quantity_changed', 'removed']);
  });
});
