import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { addMember, signup, type SignedUp } from '../../../test/helpers/auth.ts';
import { adminAndMember, waitFor } from '../../../test/helpers/jobs.ts';
import { createTestPlatform, type TestPlatform } from '../../../test/helpers/test-platform.ts';
import { runWithUnitOfWorkSlot, setUnitOfWork } from '../../platform/db/unit-of-work.ts';
import { systemActor } from '../../platform/http/actor.ts';

/** One platform for the file: the catalog is built once by a platform admin, each test uses fresh orgs. */
describe(`billing over HTTP (${process.env.TEST_DATABASE_URL ? 'postgres' : 'pglite'})`, () => {
  let t: TestPlatform;
  let admin: { authorization: string };
  let plainUser: { authorization: string };
  const plans: Record<string, string> = {};

  const req = async (method: string, url: string, headers: object, payload?: object) => {
    const res = await t.app.inject({ method: method as 'GET', url, headers: headers as Record<string, string>, ...(payload ? { payload } : {}) });
    return { status: res.statusCode, body: res.body ? res.json() : null };
  };
  const ok = async (method: string, url: string, headers: object, payload?: object) => {
    const r = await req(method, url, headers, payload);
    if (r.status >= 300) throw new Error(`${method} ${url}: ${r.status} ${JSON.stringify(r.body)}`);
    return r.body;
  };
  const clock = (o: SignedUp, iso: string) => ok('POST', `/v1/orgs/${o.orgId}/billing/test-clock`, o.auth, { frozenTime: iso });
  const charges = async (o: SignedUp) => (await ok('GET', `/v1/orgs/${o.orgId}/billing/charges?limit=100`, o.auth)).data as Array<{ kind: string; amount: number }>;
  const sum = (xs: Array<{ amount: number }>) => xs.reduce((a, x) => a + x.amount, 0);

  /** Every statement that wrote usage (shared or in an org's own transaction). */
  const ingestStatements: string[] = [];

  beforeAll(async () => {
    // A long L1 lifetime: a snapshot changes only because an invalidation reached it, never by expiring.
    t = await createTestPlatform({ env: { CACHE_L1_TTL_MS: '600000' }, db: { onQuery: (q) => void (q.sql.includes('billing_usage_ingest') && ingestStatements.push(q.sql)) } });
    ({ admin, member: plainUser } = await adminAndMember(t));
    const product = await ok('POST', '/v1/admin/billing/products', admin, { key: 'plinth', name: 'Plinth' });
    const plan = async (key: string, rank: number, extra: object, price: object) => {
      const p = await ok('POST', '/v1/admin/billing/plans', admin, { productId: product.id, key, name: key[0]!.toUpperCase() + key.slice(1), rank, ...extra });
      await ok('POST', `/v1/admin/billing/plans/${p.id}/prices`, admin, { currency: 'USD', interval: 'month', ...price });
      plans[key] = p.id;
    };
    await plan('free', 0, { isDefault: true }, { model: 'flat', flatAmount: 0, entitlements: { limits: { projects: 1, members: 2 }, quotas: { 'api.requests': 10 } } });
    await plan('starter', 10, {}, { model: 'flat', flatAmount: 3000, trialDays: 14, entitlements: { features: ['exports'], limits: { projects: 3 }, quotas: { 'api.requests': 1000 } } });
    await plan('pro', 20, { downgradeTiming: 'period_end' }, { model: 'flat', flatAmount: 9000, entitlements: { features: ['exports', 'sso'], limits: { projects: 100 } } });
    await plan('team', 15, {}, { model: 'per_unit', perSeat: true, unitAmount: 800 });
    await ok('POST', '/v1/admin/billing/meters', admin, { key: 'active.users', name: 'Active users', aggregation: 'unique_count', property: 'userId' });
  });
  afterAll(async () => t?.close());

  it('catalog administration is for platform admins; prices are validated and versioned, never edited', async () => {
    expect((await req('GET', '/v1/admin/billing/plans', plainUser)).status).toBe(403);
    expect((await req('POST', '/v1/admin/billing/products', plainUser, { key: 'x1', name: 'X' })).status).toBe(403);
    expect((await req('POST', '/v1/admin/billing/products', admin, { key: 'plinth', name: 'Again' })).body.code).toBe('BILLING.KEY_TAKEN');
    const bad = await req('POST', `/v1/admin/billing/plans/${plans.pro}/prices`, admin, { currency: 'XXX', interval: 'month', model: 'flat' });
    expect([bad.status, bad.body.code]).toEqual([422, 'BILLING.UNKNOWN_CURRENCY']);
    const tiers = await req('POST', `/v1/admin/billing/plans/${plans.pro}/prices`, admin, { currency: 'USD', interval: 'month', model: 'tiered', tiers: [{ upTo: null, unitAmount: 1, flatAmount: 0 }, { upTo: 5, unitAmount: 1, flatAmount: 0 }] });
    expect([tiers.status, tiers.body.code]).toEqual([422, 'BILLING.INVALID_PRICE']);
    expect((await req('POST', `/v1/admin/billing/plans/${plans.pro}/prices`, admin, { currency: 'USD', interval: 'month', model: 'flat', surprise: 1 })).status).toBe(400);
    const yen = await ok('POST', `/v1/admin/billing/plans/${plans.pro}/prices`, admin, { currency: 'JPY', interval: 'year', model: 'flat', flatAmount: 120000 });
    const yen2 = await ok('POST', `/v1/admin/billing/plans/${plans.pro}/prices`, admin, { currency: 'JPY', interval: 'year', model: 'flat', flatAmount: 130000 });
    expect([yen.version, yen2.version]).toEqual([1, 2]);
    const versions = (await ok('GET', `/v1/admin/billing/plans/${plans.pro}/prices`, admin)).data;
    expect(versions.filter((p: any) => p.currency === 'JPY').map((p: any) => p.flatAmount)).toEqual([130000, 120000]);
    expect((await req('GET', `/v1/admin/billing/plans/${'0'.repeat(8)}-0000-7000-8000-000000000000/prices`, admin)).status).toBe(404);
    expect((await ok('PATCH', `/v1/admin/billing/plans/${plans.pro}`, admin, { description: 'For growing teams' })).description).toBe('For growing teams');
    expect((await req('PATCH', `/v1/admin/billing/plans/${plans.pro}`, admin, {})).status).toBe(400);
    expect((await req('PATCH', `/v1/admin/billing/plans/${plans.pro}`, admin, { key: 'renamed' })).status).toBe(400);
    expect((await req('PATCH', `/v1/admin/billing/plans/${'0'.repeat(8)}-0000-7000-8000-000000000000`, admin, { rank: 1 })).body.code).toBe('BILLING.PLAN_NOT_FOUND');
    // Orgs see public plans with the current version only.
    const o = await signup(t.app);
    const catalog = (await ok('GET', `/v1/orgs/${o.orgId}/billing/catalog`, o.auth)).data;
    expect(catalog.find((p: any) => p.key === 'pro').prices.filter((p: any) => p.currency === 'JPY').map((p: any) => p.version)).toEqual([2]);
    // Every catalog write is on the platform audit chain (once the sequencer has chained it).
    await t.modules.audit.sequence('00000000-0000-0000-0000-000000000000');
    const audited = await t.modules.audit.verify('00000000-0000-0000-0000-000000000000');
    expect(audited[0]!.ok).toBe(true);
    expect(audited[0]!.events).toBeGreaterThanOrEqual(8);
  });

  it('limits: the default plan caps projects with a 402 naming the limit, the usage and the plan that lifts it; subscribing lifts it at once', async () => {
    const o = await signup(t.app);
    expect((await req('GET', `/v1/orgs/${o.orgId}/billing/customer`, o.auth)).body.code).toBe('BILLING.NO_CUSTOMER');
    const customer = await ok('PATCH', `/v1/orgs/${o.orgId}/billing/customer`, o.auth, { email: 'ap@example.com', currency: 'USD', taxId: 'DE123', address: { city: 'Berlin' } });
    expect(customer).toMatchObject({ id: o.orgId, email: 'ap@example.com', taxId: 'DE123', address: { city: 'Berlin' } });
    expect((await req('PATCH', `/v1/orgs/${o.orgId}/billing/customer`, o.auth, { email: 'not-an-email' })).status).toBe(400);
    expect((await ok('GET', `/v1/orgs/${o.orgId}/billing/entitlements`, o.auth)).plan.key).toBe('free');
    await ok('POST', `/v1/orgs/${o.orgId}/projects`, o.auth, { key: 'ONE', name: 'One' });
    const denied = await t.app.inject({ method: 'POST', url: `/v1/orgs/${o.orgId}/projects`, headers: o.auth, payload: { key: 'TWO', name: 'Two' } });
    expect(denied.statusCode).toBe(402);
    expect(denied.headers['content-type']).toContain('application/problem+json');
    expect(denied.json()).toMatchObject({ code: 'BILLING.LIMIT_EXCEEDED', limit: 'projects', allowed: 1, usage: 1, plan: 'Free', upgradeTo: { key: 'starter', limit: 3 } });
    await ok('POST', `/v1/orgs/${o.orgId}/billing/subscription`, o.auth, { planId: plans.starter });
    await ok('POST', `/v1/orgs/${o.orgId}/projects`, o.auth, { key: 'TWO', name: 'Two' });
    const snap = await ok('GET', `/v1/orgs/${o.orgId}/billing/entitlements`, o.auth);
    expect(snap).toMatchObject({ plan: { key: 'starter' }, status: 'trialing', features: ['exports'], limits: { projects: 3 } });
  });

  it('lifecycle on a test clock: trial → active (charged) → renewal on the anchored day → upgrade now (prorated) → downgrade at period end → cancel at period end', async () => {
    const o = await signup(t.app);
    await clock(o, '2030-01-31T12:00:00.000Z');
    const sub = await ok('POST', `/v1/orgs/${o.orgId}/billing/subscription`, o.auth, { planId: plans.starter, trial: false });
    expect(sub).toMatchObject({ status: 'active', currentPeriodStart: '2030-01-31T12:00:00.000Z', currentPeriodEnd: '2030-02-28T12:00:00.000Z' });
    expect(await charges(o)).toMatchObject([{ kind: 'subscription', amount: 3000 }]);
    const renewed = (await clock(o, '2030-03-01T00:00:00.000Z')).subscription;
    expect(renewed).toMatchObject({ status: 'active', currentPeriodStart: '2030-02-28T12:00:00.000Z', currentPeriodEnd: '2030-03-31T12:00:00.000Z' });
    expect(sum(await charges(o))).toBe(6000);

    // Halfway through March (by time): upgrade applies now, credit for starter + charge for pro.
    await clock(o, '2030-03-16T00:00:00.000Z');
    const preview = await ok('POST', `/v1/orgs/${o.orgId}/billing/subscription/preview-change`, o.auth, { planId: plans.pro });
    expect(preview).toMatchObject({ direction: 'upgrade', timing: 'now' });
    expect(preview.lines.map((l: any) => l.kind)).toEqual(['proration_credit', 'proration_charge']);
    expect(preview.lines[0].amount).toBeLessThan(0);
    const before = sum(await charges(o));
    const changed = await ok('POST', `/v1/orgs/${o.orgId}/billing/subscription/change`, o.auth, { planId: plans.pro });
    expect(changed.subscription.planId).toBe(plans.pro);
    expect(sum(await charges(o)) - before).toBe(preview.total);
    expect((await ok('GET', `/v1/orgs/${o.orgId}/billing/entitlements`, o.auth)).features).toContain('sso');

    // Downgrade: pro's rule says at period end; nothing is charged now and entitlements stay.
    const down = await ok('POST', `/v1/orgs/${o.orgId}/billing/subscription/change`, o.auth, { planId: plans.starter });
    expect(down.preview).toMatchObject({ direction: 'downgrade', timing: 'period_end', effectiveAt: '2030-03-31T12:00:00.000Z', lines: [] });
    expect(down.subscription).toMatchObject({ planId: plans.pro, pendingPlanId: plans.starter });
    const applied = (await clock(o, '2030-04-01T00:00:00.000Z')).subscription;
    expect(applied).toMatchObject({ planId: plans.starter, pendingPlanId: null, currentPeriodEnd: '2030-04-30T12:00:00.000Z' });
    expect((await ok('GET', `/v1/orgs/${o.orgId}/billing/entitlements`, o.auth)).features).toEqual(['exports']);

    // Cancel at period end, take it back, schedule it again; the renewal then cancels.
    expect((await ok('POST', `/v1/orgs/${o.orgId}/billing/subscription/cancel`, o.auth, { atPeriodEnd: true })).cancelAtPeriodEnd).toBe(true);
    expect((await ok('POST', `/v1/orgs/${o.orgId}/billing/subscription/uncancel`, o.auth)).cancelAtPeriodEnd).toBe(false);
    expect((await req('POST', `/v1/orgs/${o.orgId}/billing/subscription/uncancel`, o.auth)).body.code).toBe('BILLING.INVALID_TRANSITION');
    await ok('POST', `/v1/orgs/${o.orgId}/billing/subscription/cancel`, o.auth, { atPeriodEnd: true });
    const ended = (await clock(o, '2030-05-01T00:00:00.000Z')).subscription;
    expect(ended).toMatchObject({ status: 'canceled', canceledAt: '2030-04-30T12:00:00.000Z' });
    expect((await ok('GET', `/v1/orgs/${o.orgId}/billing/subscription`, o.auth)).status).toBe('canceled');
    expect((await ok('GET', `/v1/orgs/${o.orgId}/billing/entitlements`, o.auth)).plan.key).toBe('free');
    // A clock never goes back.
    expect((await req('POST', `/v1/orgs/${o.orgId}/billing/test-clock`, o.auth, { frozenTime: '2030-01-01T00:00:00Z' })).body.code).toBe('BILLING.TEST_CLOCK_BACKWARDS');
    // Every transition was published with its state change.
    const names = await sql<{ name: string; n: number }>`select name, count(*)::int as n from outbox where tenant_id = ${o.orgId} and name like 'billing.%' group by name order by name`.execute(t.db.owner);
    expect(Object.fromEntries(names.rows.map((r) => [r.name, r.n]))).toMatchObject({ 'billing.subscription_created': 1, 'billing.subscription_canceled': 1 });
    expect(names.rows.find((r) => r.name === 'billing.entitlements_changed')!.n).toBeGreaterThanOrEqual(3);
  });

  it('trial end, pause/resume, cancel now with credit, past due and dunning', async () => {
    const o = await signup(t.app);
    await clock(o, '2031-06-01T00:00:00.000Z');
    const trial = await ok('POST', `/v1/orgs/${o.orgId}/billing/subscription`, o.auth, { planId: plans.starter });
    expect(trial).toMatchObject({ status: 'trialing', trialEnd: '2031-06-15T00:00:00.000Z' });
    expect(await charges(o)).toEqual([]);
    expect((await req('POST', `/v1/orgs/${o.orgId}/billing/subscription`, o.auth, { planId: plans.pro })).body.code).toBe('BILLING.ALREADY_SUBSCRIBED');
    expect((await clock(o, '2031-06-15T00:00:00.000Z')).subscription).toMatchObject({ status: 'active', currentPeriodEnd: '2031-07-15T00:00:00.000Z' });
    expect(sum(await charges(o))).toBe(3000);

    expect((await ok('POST', `/v1/orgs/${o.orgId}/billing/subscription/pause`, o.auth)).status).toBe('paused');
    expect((await ok('GET', `/v1/orgs/${o.orgId}/billing/entitlements`, o.auth)).plan.key).toBe('free');
    expect((await req('POST', `/v1/orgs/${o.orgId}/billing/subscription/pause`, o.auth)).status).toBe(409);
    await clock(o, '2031-07-20T00:00:00.000Z');
    expect(sum(await charges(o))).toBe(3000);
    expect((await ok('POST', `/v1/orgs/${o.orgId}/billing/subscription/resume`, o.auth)).status).toBe('active');

    // Payments (issue #14) report a failure: past_due, still entitled; after the grace period it is canceled.
    const ctx = { ...systemActor('test'), tenantId: o.orgId };
    expect((await t.modules.billing.markPastDue(ctx)).status).toBe('past_due');
    expect((await ok('GET', `/v1/orgs/${o.orgId}/billing/entitlements`, o.auth)).status).toBe('past_due');
    expect((await t.modules.billing.markPaid(ctx)).status).toBe('active');
    await t.modules.billing.markPastDue(ctx);
    // Past due since 2031-07-20 (the clock), grace 14 days: canceled on 2031-08-03.
    expect((await clock(o, '2031-08-10T00:00:00.000Z')).subscription).toMatchObject({ status: 'canceled', canceledAt: '2031-08-03T00:00:00.000Z' });
    expect((await ok('GET', `/v1/orgs/${o.orgId}/billing/subscription`, o.auth)).status).toBe('canceled');

    // Cancel now credits the unused part, exactly.
    const p = await signup(t.app);
    await clock(p, '2031-06-01T00:00:00.000Z');
    await ok('POST', `/v1/orgs/${p.orgId}/billing/subscription`, p.auth, { planId: plans.starter, trial: false });
    await clock(p, '2031-06-16T00:00:00.000Z');
    expect((await ok('POST', `/v1/orgs/${p.orgId}/billing/subscription/cancel`, p.auth, { atPeriodEnd: false })).status).toBe('canceled');
    expect((await charges(p)).map((c) => c.amount)).toEqual([3000, -1500]);
    expect((await req('POST', `/v1/orgs/${p.orgId}/billing/subscription/pause`, p.auth)).body.code).toBe('BILLING.NO_SUBSCRIPTION');
  });

  it('a committed billing.entitlements_changed event drops the cached snapshot on every instance (the handler, not the request, lands it)', async () => {
    const o = await signup(t.app);
    const url = `/v1/orgs/${o.orgId}/billing/entitlements`;
    await ok('PATCH', `/v1/orgs/${o.orgId}/billing/customer`, o.auth, { name: 'Cached Ltd' });
    const cached = await ok('GET', url, o.auth);
    expect(cached.limits).toEqual({ projects: 1, members: 2 });
    // Another instance changes the plan and commits its event, but never invalidates this one's cache itself.
    const pro = (await ok('GET', '/v1/admin/billing/plans', admin)).data.find((p: any) => p.key === 'pro');
    const price = pro.prices.find((p: any) => p.currency === 'USD' && p.interval === 'month');
    await t.db.withTenant(o.orgId, async (trx) => {
      const now = new Date();
      await trx.insertInto('billing_subscriptions').values({ tenant_id: o.orgId, id: o.orgId, plan_id: pro.id, price_id: price.id, status: 'active', currency: 'USD', interval: 'month', anchor_at: now, current_period_start: now, current_period_end: new Date(now.getTime() + 86_400_000) }).execute();
      const { entitlements_version: version } = await trx.updateTable('billing_customers').set({ entitlements_version: sql`entitlements_version + 1` }).where('tenant_id', '=', o.orgId).returning('entitlements_version').executeTakeFirstOrThrow();
      await t.events.add(trx, { name: 'billing.entitlements_changed', tenantId: o.orgId, payload: { version: Number(version) } });
    });
    expect((await ok('GET', url, o.auth)).limits).toEqual({ projects: 1, members: 2 });
    // The worker role relays the event and runs billing.entitlements_cache.
    await t.events.startWorker();
    try {
      const fresh = await waitFor(() => ok('GET', url, o.auth), (s) => s.plan?.key === 'pro', 10_000, 50);
      expect(fresh.limits).toEqual({ projects: 100 });
      expect(fresh.version).toBeGreaterThan(cached.version);
    } finally {
      await t.events.stopWorker();
    }
  });

  it("tenancy enforces the plan's member limit when an invitation is accepted", async () => {
    const o = await signup(t.app);
    await addMember(t.app, o, o.orgId, await signup(t.app), 'member');
    const third = await signup(t.app);
    const inv = await ok('POST', `/v1/orgs/${o.orgId}/invitations`, o.auth, { email: third.email, role: 'viewer' });
    const refused = await req('POST', `/v1/invitations/${inv.token}/accept`, third.auth);
    expect(refused.status).toBe(402);
    expect(refused.body).toMatchObject({ code: 'BILLING.LIMIT_EXCEEDED', limit: 'members', allowed: 2, usage: 2, upgradeTo: { key: 'starter', limit: null } });
    expect((await req('GET', `/v1/orgs/${o.orgId}`, third.auth)).status).toBe(404);
    await ok('POST', `/v1/orgs/${o.orgId}/billing/subscription`, o.auth, { planId: plans.starter });
    expect((await req('POST', `/v1/invitations/${inv.token}/accept`, third.auth)).status).toBe(200);
  });

  it("the edge's per-org rate limit follows the plan (limit api.rate)", async () => {
    const o = await signup(t.app);
    const product = (await ok('GET', '/v1/admin/billing/products', admin)).data[0];
    const tiny = await ok('POST', '/v1/admin/billing/plans', admin, { productId: product.id, key: 'tiny-rate', name: 'Tiny', rank: -5, public: false });
    await ok('POST', `/v1/admin/billing/plans/${tiny.id}/prices`, admin, { currency: 'USD', interval: 'month', model: 'flat', entitlements: { limits: { 'api.rate': 4 } } });
    await ok('POST', `/v1/orgs/${o.orgId}/billing/subscription`, o.auth, { planId: tiny.id });
    const statuses: number[] = [];
    let policy = '';
    for (let i = 0; i < 6; i++) {
      const res = await t.app.inject({ url: `/v1/orgs/${o.orgId}/billing/entitlements`, headers: o.auth });
      statuses.push(res.statusCode);
      policy = String(res.headers['ratelimit-policy'] ?? policy);
    }
    expect(policy).toMatch(/"org";q=4;/);
    expect(statuses).toContain(429);
    // Another org on the default plan keeps the configured quota.
    const other = await signup(t.app);
    expect(String((await t.app.inject({ url: `/v1/orgs/${other.orgId}/billing/entitlements`, headers: other.auth })).headers['ratelimit-policy'])).not.toMatch(/"org";q=4;/);
  });

  it('billing.* events reach the org\'s webhooks (signed delivery through the outbox)', async () => {
    const received: Array<{ type: string; data: any }> = [];
    const server = createServer((rq, rs) => {
      let body = '';
      rq.on('data', (c) => (body += c));
      rq.on('end', () => {
        received.push(JSON.parse(body));
        rs.writeHead(204).end();
      });
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    try {
      const o = await signup(t.app);
      const port = (server.address() as AddressInfo).port;
      await ok('POST', `/v1/orgs/${o.orgId}/webhooks`, o.auth, { url: `http://127.0.0.1:${port}/hook`, events: ['billing.subscription_created', 'billing.subscription_canceled'] });
      await ok('POST', `/v1/orgs/${o.orgId}/billing/subscription`, o.auth, { planId: plans.starter });
      await ok('POST', `/v1/orgs/${o.orgId}/billing/subscription/cancel`, o.auth, { atPeriodEnd: false });
      await t.events.startWorker();
      try {
        await waitFor(async () => received.length, (n) => n >= 2, 15_000, 50);
      } finally {
        await t.events.stopWorker();
      }
      expect(received.map((e) => e.type).sort()).toEqual(['billing.subscription_canceled', 'billing.subscription_created']);
      expect(received.find((e) => e.type === 'billing.subscription_created')!.data).toMatchObject({ status: 'trialing', planId: plans.starter, change: 'created' });
    } finally {
      server.close();
    }
  });

  it('changing to a yearly price starts a yearly cycle (credit for the unused month, the year charged)', async () => {
    await ok('POST', `/v1/admin/billing/plans/${plans.pro}/prices`, admin, { currency: 'USD', interval: 'year', model: 'flat', flatAmount: 90000, entitlements: { features: ['exports', 'sso'], limits: { projects: 100 } } });
    const o = await signup(t.app);
    await clock(o, '2032-01-01T00:00:00.000Z');
    await ok('POST', `/v1/orgs/${o.orgId}/billing/subscription`, o.auth, { planId: plans.starter, trial: false });
    await clock(o, '2032-01-16T12:00:00.000Z');
    const { subscription, preview } = await ok('POST', `/v1/orgs/${o.orgId}/billing/subscription/change`, o.auth, { planId: plans.pro, interval: 'year' });
    expect(preview.lines.map((l: any) => [l.kind, l.amount])).toEqual([['proration_credit', -1500], ['proration_charge', 90000]]);
    expect(subscription).toMatchObject({ interval: 'year', currentPeriodStart: '2032-01-16T12:00:00.000Z', currentPeriodEnd: '2033-01-16T12:00:00.000Z' });
    expect(sum(await charges(o))).toBe(3000 - 1500 + 90000);
    expect((await clock(o, '2033-01-20T00:00:00.000Z')).subscription).toMatchObject({ currentPeriodEnd: '2034-01-16T12:00:00.000Z' });
    expect(sum(await charges(o))).toBe(3000 - 1500 + 90000 * 2);
  });

  it('seat-based plans follow the member count', async () => {
    const o = await signup(t.app);
    const sub = await ok('POST', `/v1/orgs/${o.orgId}/billing/subscription`, o.auth, { planId: plans.team, trial: false });
    expect(sub.quantity).toBe(1);
    await addMember(t.app, o, o.orgId, await signup(t.app), 'member');
    const synced = await t.modules.billing.syncSeats({ ...systemActor('test'), tenantId: o.orgId });
    expect(synced!.quantity).toBe(2);
    const cs = await charges(o);
    expect(cs[0]).toMatchObject({ kind: 'subscription', amount: 800 });
    expect(cs.slice(1).map((c) => c.kind)).toEqual(['proration_credit', 'proration_charge']);
  });

  it('usage: single and batch ingestion, idempotent by key, late events rejected, aggregations from rollups, quota thresholds published', async () => {
    const o = await signup(t.app);
    const url = `/v1/orgs/${o.orgId}/usage-events`;
    const now = Date.now();
    const at = (msAgo: number) => new Date(now - msAgo).toISOString();
    expect(await ok('POST', url, o.auth, { key: 'e1', metric: 'api.requests', timestamp: at(0) })).toEqual({ accepted: 1, duplicates: 0, rejected: [] });
    const batch = await ok('POST', url, o.auth, {
      events: [
        { key: 'e1', metric: 'api.requests', timestamp: at(0) },
        { key: 'e2', metric: 'api.requests', timestamp: at(1000), value: 4 },
        { key: 'e2', metric: 'api.requests', timestamp: at(1000), value: 4 },
        { key: 'e3', metric: 'api.requests', timestamp: at(100 * 3_600_000) },
        { key: 'e4', metric: 'api.requests', timestamp: new Date(now + 3_600_000).toISOString() },
        { key: 'u1', metric: 'active.users', timestamp: at(0), properties: { userId: 'a' } },
        { key: 'u2', metric: 'active.users', timestamp: at(0), properties: { userId: 'b' } },
        { key: 'u3', metric: 'active.users', timestamp: at(0), properties: { userId: 'a' } },
        { key: 'g1', metric: 'storage.gb', timestamp: at(2000), value: 7.5 },
        { key: 'g2', metric: 'storage.gb', timestamp: at(1000), value: 3 },
      ],
    });
    expect(batch.accepted).toBe(6);
    expect(batch.duplicates).toBe(2);
    expect(batch.rejected.map((r: any) => [r.key, r.code])).toEqual([['e3', 'BILLING.USAGE_TOO_LATE'], ['e4', 'BILLING.USAGE_IN_FUTURE']]);
    const q = async (metric: string, aggregation: string) => (await ok('GET', `/v1/orgs/${o.orgId}/usage?metric=${metric}&from=${at(3_600_000 * 2)}&to=${new Date(now + 3_600_000).toISOString()}&groupBy=total&aggregation=${aggregation}`, o.auth)).data[0]?.value;
    expect(await q('api.requests', 'sum')).toBe(5);
    expect(await q('api.requests', 'count')).toBe(2);
    expect(await q('api.requests', 'max')).toBe(4);
    expect(await q('storage.gb', 'latest')).toBe(3);
    expect(await q('active.users', 'unique_count')).toBe(2);
    const byMeter = await ok('GET', `/v1/orgs/${o.orgId}/usage?metric=active.users&from=${at(3_600_000 * 2)}&groupBy=total`, o.auth);
    expect(byMeter.aggregation).toBe('unique_count');
    // A batch travels as one JSON parameter: what array literals had to escape (quotes, backslashes, braces,
    // commas, NULL, non-ASCII) round-trips exactly, in keys and properties, and counts as distinct values.
    const odd = ['a"b', 'c\\d', '{e,f}', 'NULL', 'ü ✓ 𝄞', "'g' (h)"];
    const oddEvents = odd.map((v, i) => ({ key: `odd ${v} ${i}`, metric: 'active.users', timestamp: at(0), value: 0.125, properties: { userId: v, n: i, flag: i % 2 === 0, none: null } }));
    expect((await ok('POST', url, o.auth, { events: oddEvents })).accepted).toBe(odd.length);
    const stored = await sql<{ key: string; value: string; properties: unknown }>`select key, value::text, properties from billing_usage_events where tenant_id = ${o.orgId} and key like 'odd %'`.execute(t.db.owner);
    const byKey = (a: { key: string }, b: { key: string }) => (a.key < b.key ? -1 : 1);
    expect(stored.rows.sort(byKey)).toEqual(oddEvents.map((e) => ({ key: e.key, value: '0.125', properties: e.properties })).sort(byKey));
    expect(await q('active.users', 'unique_count')).toBe(2 + odd.length);
    // The free plan's quota (10 api.requests): 5 so far; crossing 80 % and 100 % each publish once.
    await ok('POST', url, o.auth, { events: Array.from({ length: 6 }, (_, i) => ({ key: `q${i}`, metric: 'api.requests', timestamp: at(0) })) });
    const crossed = await sql<{ payload: any }>`select payload from outbox where tenant_id = ${o.orgId} and name = 'billing.usage_threshold_crossed' order by id`.execute(t.db.owner);
    expect(crossed.rows.map((r) => r.payload.threshold)).toEqual([80, 100]);
    // Bad input: an oversized batch and an unknown field are refused before anything is written.
    expect((await req('POST', url, o.auth, { events: Array.from({ length: 1001 }, (_, i) => ({ key: `b${i}`, metric: 'api.requests' })) })).status).toBe(400);
    expect((await req('POST', url, o.auth, { key: 'x', metric: 'api.requests', extra: 1 })).status).toBe(400);
    // Viewers may not meter.
    const viewer = await signup(t.app);
    await addMember(t.app, o, o.orgId, viewer, 'viewer');
    expect((await req('POST', url, viewer.auth, { key: 'v1', metric: 'api.requests' })).status).toBe(403);
  });

  it('product usage meters itself from product events: each task created is one tasks.created event, counted once', async () => {
    const o = await signup(t.app);
    const project = await ok('POST', `/v1/orgs/${o.orgId}/projects`, o.auth, { key: 'MTR', name: 'Metered' });
    for (let i = 0; i < 3; i++) await ok('POST', `/v1/orgs/${o.orgId}/projects/${project.id}/tasks`, o.auth, { title: `Task ${i}` });
    const query = () => t.modules.billing.usage(o.orgId, { metric: 'tasks.created', from: new Date(Date.now() - 7_200_000), to: new Date(Date.now() + 3_600_000), groupBy: 'total', aggregation: 'sum' });
    await t.events.startWorker();
    try {
      await waitFor(query, (u) => u.data[0]?.value === 3, 15_000, 50);
    } finally {
      await t.events.stopWorker();
    }
    await t.events.sweepOnce(0);
    expect((await query()).data[0]!.value).toBe(3);
  });

  it('a failed write followed by a retry counts each event exactly once (claim and event commit together)', async () => {
    const o = await signup(t.app);
    const ctx = { ...systemActor('test'), tenantId: o.orgId };
    const events = [{ key: 'r1', metric: 'api.calls' }, { key: 'r2', metric: 'api.calls', value: 2 }];
    // First attempt: the surrounding transaction fails after the ingestion ran in it.
    await runWithUnitOfWorkSlot(async () => {
      const uow = t.db.openUnitOfWork(async () => {});
      setUnitOfWork(uow);
      expect((await t.modules.billing.ingest(ctx, events)).accepted).toBe(2);
      await uow.rollback();
    });
    expect((await t.modules.billing.usage(o.orgId, { metric: 'api.calls', from: new Date(Date.now() - 7_200_000), to: new Date(Date.now() + 3_600_000), groupBy: 'total', aggregation: 'sum' })).data).toEqual([]);
    // The retry is not mistaken for a duplicate, and a second retry is.
    expect(await t.modules.billing.ingest(ctx, events)).toMatchObject({ accepted: 2, duplicates: 0 });
    expect(await t.modules.billing.ingest(ctx, events)).toMatchObject({ accepted: 0, duplicates: 2 });
    const total = await t.modules.billing.usage(o.orgId, { metric: 'api.calls', from: new Date(Date.now() - 7_200_000), to: new Date(Date.now() + 3_600_000), groupBy: 'total', aggregation: 'sum' });
    expect(total.data[0]!.value).toBe(3);
  });

  it('concurrent ingest calls of one org share transactions (group commit) and are answered as if run one after the other; a bad call fails alone', async () => {
    const o = await signup(t.app);
    const ctx = { ...systemActor('test'), tenantId: o.orgId };
    // 12 calls at once, keys overlapping between neighbours: every key counted once, every event answered once.
    const calls = Array.from({ length: 12 }, (_, i) => [{ key: `g${i}`, metric: 'group.calls' }, { key: `g${i + 1}`, metric: 'group.calls' }]);
    const poison = [{ key: 'bad', metric: 'group.calls', properties: { text: 'nul \u0000 byte' } }];
    const settled = await Promise.allSettled([...calls.map((events) => t.modules.billing.ingest(ctx, events)), t.modules.billing.ingest(ctx, poison)]);
    const results = settled.slice(0, 12).map((r) => (r.status === 'fulfilled' ? r.value : r.reason));
    for (const r of results) expect(r.accepted + r.duplicates).toBe(2);
    expect(results.reduce((a, r) => a + r.accepted, 0)).toBe(13);
    expect(settled[12]!.status).toBe('rejected');
    const total = await t.modules.billing.usage(o.orgId, { metric: 'group.calls', from: new Date(Date.now() - 7_200_000), to: new Date(Date.now() + 3_600_000), groupBy: 'total', aggregation: 'count' });
    expect(total.data[0]!.value).toBe(13);
  });

  it("single events of many orgs at once share statements (group commit across orgs): each org counts exactly its own, and a failing org's call fails alone", async () => {
    const orgs: SignedUp[] = [];
    for (let i = 0; i < 6; i++) orgs.push(await signup(t.app));
    const poisoned = await signup(t.app);
    const ctx = (o: SignedUp) => ({ ...systemActor('test'), tenantId: o.orgId });
    // Every org: five events of its own weight (org j: value j + 1) and x0 sent a second time (a duplicate).
    const calls = orgs.flatMap((o, j) => [0, 1, 2, 3, 4, 0].map((i) => ({ o, events: [{ key: `x${i}`, metric: 'shared.calls', value: j + 1 }] })));
    ingestStatements.length = 0;
    const results = await Promise.all(calls.map(({ o, events }) => t.modules.billing.ingest(ctx(o), events)));
    expect(results.every((r) => r.accepted + r.duplicates === 1)).toBe(true);
    expect(results.reduce((a, r) => a + r.accepted, 0)).toBe(orgs.length * 5);
    // Embedded (one connection, so the queue builds up): fewer statements than the orgs' own groups would need
    // (each org's six calls make two groups at least). On Postgres the groups trickle in as each org's clock
    // read returns; the exact count below shows the sharing there.
    if (t.db.kind === 'pglite') expect(ingestStatements.length).toBeLessThan(orgs.length * 2);
    // A statement shared with an org whose events the database refuses: the others' events still count, once.
    // On Postgres exactly so: orgs 0–3 write an hour whose rollup rows another transaction holds locked, so
    // their four statements (all that may be in flight) are blocked when orgs 4–5 and the poisoned org arrive;
    // those three share the next statement, which fails, and then go one by one: 4 + 1 + 3 statements.
    const pgExact = t.db.kind === 'postgres';
    const lockedHour = new Date(Math.floor(Date.now() / 3_600_000) * 3_600_000 - 3_600_000 + 1_800_000).toISOString();
    const x5 = (o: SignedUp, j: number, timestamp?: string) => t.modules.billing.ingest(ctx(o), [{ key: 'x5', metric: 'shared.calls', value: j + 1, timestamp }]);
    const poison = () => t.modules.billing.ingest(ctx(poisoned), [{ key: 'bad', metric: 'shared.calls', properties: { text: 'nul \u0000 byte' } }]);
    let settled: PromiseSettledResult<Awaited<ReturnType<typeof poison>>>[];
    if (pgExact) {
      for (const o of orgs.slice(0, 4)) await t.modules.billing.ingest(ctx(o), [{ key: 'lock', metric: 'shared.calls', value: 0, timestamp: lockedHour }]);
      settled = await t.db.owner.connection().execute(async (conn) => {
        await sql`begin`.execute(conn);
        for (const o of orgs.slice(0, 4)) {
          await sql`select set_config('app.tenant_id', ${o.orgId}, true)`.execute(conn);
          await sql`select 1 from billing_usage_rollups where tenant_id = ${o.orgId} and metric = 'shared.calls' and bucket = date_trunc('hour', ${lockedHour}::timestamptz) for update`.execute(conn);
        }
        ingestStatements.length = 0;
        const first = orgs.slice(0, 4).map((o, j) => x5(o, j, lockedHour));
        await new Promise((r) => setTimeout(r, 300));
        const rest = [...orgs.slice(4).map((o, j) => x5(o, j + 4)), poison()];
        await new Promise((r) => setTimeout(r, 300));
        await sql`commit`.execute(conn);
        return Promise.allSettled([...first, ...rest]);
      });
    } else {
      ingestStatements.length = 0;
      settled = await Promise.allSettled([...orgs.map((o, j) => x5(o, j)), poison()]);
    }
    expect(settled.at(-1)!.status).toBe('rejected');
    expect(settled.slice(0, -1).map((r) => (r.status === 'fulfilled' ? r.value.accepted : r.reason))).toEqual(orgs.map(() => 1));
    if (pgExact) expect(ingestStatements).toHaveLength(4 + 1 + 3);
    const range = { metric: 'shared.calls', from: new Date(Date.now() - 3 * 3_600_000), to: new Date(Date.now() + 3_600_000), groupBy: 'total' as const };
    for (const [j, o] of orgs.entries()) {
      expect((await t.modules.billing.usage(o.orgId, { ...range, aggregation: 'sum' })).data[0]!.value).toBe(6 * (j + 1));
      expect((await t.modules.billing.usage(o.orgId, { ...range, aggregation: 'count' })).data[0]!.value).toBe(pgExact && j < 4 ? 7 : 6);
    }
    expect((await t.modules.billing.usage(poisoned.orgId, { ...range, aggregation: 'count' })).data).toEqual([]);
  });
});
