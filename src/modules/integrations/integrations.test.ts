import { createServer, type IncomingHttpHeaders, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { gunzipSync } from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { addMember, signup, type SignedUp } from '../../../test/helpers/auth.ts';
import { waitFor as waitUntil } from '../../../test/helpers/jobs.ts';
import { createTestPlatform, type TestPlatform } from '../../../test/helpers/test-platform.ts';

const waitFor = <T>(probe: () => Promise<T> | T, done: (v: T) => boolean, timeoutMs?: number) => waitUntil(async () => probe(), done, timeoutMs);
import { scrape } from '../../platform/observability/metrics.ts';
import { applyTemplate } from './connectors/http.ts';
import { parseRetryAfter } from './integrations.connector.ts';
import { outboundUrlProblem } from '../../platform/net/url-policy.ts';
import { hubspotSignatureV3 } from './index.ts';

/**
 * The integrations module on the real composition. Connections over HTTP (at the end), and connectors end to end on the real composition and event bus: outbox events → fan-out → batched vendor
 * calls through the official SDK (posthog-node) and the generic HTTP connector, against a local capture
 * server. Retries honour 429 + Retry-After; one org's failing vendor opens only its own breaker.
 */
interface Captured {
  at: number;
  path: string;
  headers: IncomingHttpHeaders;
  body: any;
}
type Answer = { status: number; headers?: Record<string, string> };

let t: TestPlatform;
let server: Server;
let base: string;
const captured: Captured[] = [];
/** Per PostHog project key (or HTTP path): how the fake answers the n-th request. */
const behaviours = new Map<string, (n: number) => Answer>();

/** A local HubSpot: batch upserts keyed by the idProperty, default associations; the first deal upsert answers 429. */
const crm = {
  companies: new Map<string, { id: string; properties: Record<string, string> }>(),
  deals: new Map<string, { id: string; properties: Record<string, string> }>(),
  /** Keyed by e-mail (HubSpot's unique contact key, the upsert's idProperty). */
  contacts: new Map<string, { id: string; properties: Record<string, string> }>(),
  associations: [] as string[],
  contactCompany: new Set<string>(),
  dealUpserts: 0,
  contactUpserts: 0,
  tokens: [] as string[],
};
let crmSeq = 1000;
function hubspotFake(method: string, path: string, headers: IncomingHttpHeaders, body: any, res: import('node:http').ServerResponse) {
  crm.tokens.push(String(headers.authorization));
  const json = (status: number, value: unknown) => res.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify(value));
  const upsert = /^\/crm\/v3\/objects\/(companies|deals|contacts)\/batch\/upsert$/.exec(path);
  if (method === 'POST' && upsert) {
    const kind = upsert[1] as 'companies' | 'deals' | 'contacts';
    if (kind === 'deals' && ++crm.dealUpserts === 1) return json(429, { status: 'error', message: 'You have reached your secondly limit.', category: 'RATE_LIMITS' });
    if (kind === 'contacts') {
      if (++crm.contactUpserts === 1) return res.writeHead(429, { 'content-type': 'application/json', 'retry-after': '0' }).end(JSON.stringify({ status: 'error', message: 'You have reached your secondly limit.', category: 'RATE_LIMITS' }));
      if (body.inputs.some((i: any) => i.idProperty !== 'email' || !/^[^@\s]+@[^@\s]+$/.test(i.id))) return json(400, { status: 'error', message: 'Property values were not valid', category: 'VALIDATION_ERROR' });
    }
    const now = new Date().toISOString();
    const results = body.inputs.map((input: any) => {
      const existing = crm[kind].get(input.id);
      const record = { id: existing?.id ?? String(++crmSeq), properties: { ...existing?.properties, ...input.properties } };
      crm[kind].set(input.id, record);
      return { id: record.id, properties: record.properties, createdAt: now, updatedAt: now, archived: false, new: !existing };
    });
    return json(200, { status: 'COMPLETE', results, startedAt: now, completedAt: now });
  }
  const contactAssoc = /^\/crm\/v4\/objects\/contacts\/(\d+)\/associations\/(default\/)?companies\/(\d+)$/.exec(path);
  if (contactAssoc && (method === 'PUT' || method === 'DELETE')) {
    const key = `${contactAssoc[1]}->${contactAssoc[3]}`;
    if (method === 'DELETE') {
      crm.contactCompany.delete(key);
      return res.writeHead(204).end();
    }
    crm.contactCompany.add(key);
    const now = new Date().toISOString();
    return json(200, { status: 'COMPLETE', results: [{ from: { id: contactAssoc[1] }, to: { id: contactAssoc[3] }, associationSpec: { associationCategory: 'HUBSPOT_DEFINED', associationTypeId: 279 } }], startedAt: now, completedAt: now });
  }
  const assoc = /^\/crm\/v4\/objects\/deals\/(\d+)\/associations\/default\/companies\/(\d+)$/.exec(path);
  if (method === 'PUT' && assoc) {
    const key = `${assoc[1]}->${assoc[2]}`;
    if (!crm.associations.includes(key)) crm.associations.push(key);
    const now = new Date().toISOString();
    return json(200, { status: 'COMPLETE', results: [{ from: { id: assoc[1] }, to: { id: assoc[2] }, associationSpec: { associationCategory: 'HUBSPOT_DEFINED', associationTypeId: 341 } }], startedAt: now, completedAt: now });
  }
  return json(404, { status: 'error', message: `fake has no ${method} ${path}` });
}

beforeAll(async () => {
  server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => {
      let raw = Buffer.concat(chunks);
      if (req.headers['content-encoding'] === 'gzip') raw = gunzipSync(raw);
      const body = JSON.parse(raw.toString('utf8') || 'null');
      const path = req.url ?? '';
      captured.push({ at: Date.now(), path, headers: req.headers, body });
      if (path.startsWith('/crm/')) return hubspotFake(req.method ?? '', path, req.headers, body, res);
      const key = body?.api_key ?? path;
      const n = captured.filter((c) => (c.body?.api_key ?? c.path) === key).length;
      const answer = (behaviours.get(key) ?? ((): Answer => ({ status: 200 })))(n);
      res.writeHead(answer.status, { 'content-type': 'application/json', ...answer.headers }).end('{"status":1}');
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  t = await createTestPlatform({
    env: { JOBS_POLL_MS: '20', JOBS_IDLE_POLL_MS: '20' },
    seams: {
      integrations: {
        delivery: { maxAttempts: 4, backoffBaseMs: 30, backoffMaxMs: 120, limits: { breaker: { threshold: 3, halfOpenAfterMs: 60_000 } } },
      },
    },
  });
  await t.events.startWorker();
}, 120_000);
afterAll(async () => {
  server.closeAllConnections();
  await new Promise((r) => server.close(r));
  await t?.close();
});

function call(who: SignedUp, method: string, url: string, payload?: unknown) {
  return t.app.inject({ method: method as any, url, headers: who.auth, ...(payload !== undefined ? { payload: payload as any } : {}) });
}
const conns = (who: SignedUp) => `/v1/orgs/${who.orgId}/integrations`;

async function connect(who: SignedUp, body: Record<string, unknown>) {
  const res = await call(who, 'POST', conns(who), body);
  expect(res.statusCode, res.body).toBe(201);
  return res.json() as { id: string };
}
const posthog = (who: SignedUp, key: string, events = ['projects.project_created']) =>
  connect(who, { connector: 'posthog', name: `PostHog ${key}`, config: { host: base }, credentials: { projectApiKey: key }, events });

let seq = 0;
async function project(who: SignedUp) {
  const res = await call(who, 'POST', `/v1/orgs/${who.orgId}/projects`, { key: `P${++seq}`, name: `Project ${seq}` });
  expect(res.statusCode, res.body).toBe(201);
  return res.json() as { id: string; key: string; name: string };
}
const connection = async (who: SignedUp, id: string) => (await call(who, 'GET', `${conns(who)}/${id}`)).json();
const deliveries = async (who: SignedUp, id: string, status?: string) =>
  (await call(who, 'GET', `${conns(who)}/${id}/deliveries?limit=100${status ? `&status=${status}` : ''}`)).json().data as any[];
/** The integrations fan-out has seen `n` project_created events of the org (none of them is live for a later connection). */
const fannedOut = (orgId: string, n: number) =>
  waitFor(
    () => t.db.owner.selectFrom('processed_events').select((eb) => eb.fn.countAll<number>().as('n')).where('consumer', '=', 'integrations.fanout.projects.project_created').where('tenant_id', '=', orgId).executeTakeFirstOrThrow(),
    (r) => Number(r.n) === n,
  );
/** The fan-out has seen the org's signup events, so a connection made now gets them only through a backfill. */
const signupFannedOut = (orgId: string) =>
  waitFor(
    () => t.db.owner.selectFrom('processed_events').select('consumer').where('tenant_id', '=', orgId).where('consumer', 'in', ['integrations.fanout.tenancy.user_signed_up', 'integrations.fanout.tenancy.org_created', 'integrations.fanout.tenancy.member_joined']).execute(),
    (rows) => rows.length === 3,
  );
/** The captured events of a project key, without the per-batch $groupidentify. */
const capturesFor = (key: string) => batchesFor(key).flatMap((r) => r.body.batch).filter((e: any) => e.event !== '$groupidentify');
const batchesFor = (key: string) => captured.filter((c) => c.body?.api_key === key);

describe('PostHog through posthog-node', () => {
  it('backfills history in one batched request with the exact payload, resumably and without duplicates; then live events', async () => {
    const org = await signup(t.app);
    const projects = [await project(org), await project(org), await project(org)];
    await fannedOut(org.orgId, 3);
    const key = 'phc_backfill';
    const c = await posthog(org, key);
    const started = await call(org, 'POST', `${conns(org)}/${c.id}/backfill`, {});
    expect(started.statusCode, started.body).toBe(202);
    expect(started.json().backfillStatus).toBe('running');
    const done = await waitFor(() => connection(org, c.id), (v) => v.backfillStatus === 'done' && v.health.backlog === 0 && v.lastSuccessAt !== null);
    expect(done).toMatchObject({ backfillCount: 3, backfillCursor: null, consecutiveFailures: 0, lastError: null, health: { backlog: 0, deadLetters: 0, breaker: 'closed' } });

    const requests = batchesFor(key);
    const events = capturesFor(key);
    const group = requests[0]!.body.batch.find((e: any) => e.event === '$groupidentify');
    expect(group).toMatchObject({ properties: { $group_type: 'organization', $group_key: org.orgId, $group_set: { plinth_org_id: org.orgId } } });
    expect(events.map((e: any) => e.uuid).sort()).toEqual(projects.map((p) => p.id).sort());
    // Batched: the three backfilled events share requests (one, unless a concurrent sender split them on pg).
    expect(requests.length).toBeLessThan(3);
    if (!process.env.TEST_DATABASE_URL) expect(requests).toHaveLength(1);
    expect(requests[0]!.path).toBe('/batch/');
    expect(Object.keys(requests[0]!.body).sort()).toEqual(['api_key', 'batch', 'sent_at']);
    const first = events.find((e: any) => e.uuid === projects[0]!.id);
    expect(first).toMatchObject({
      event: 'projects.project_created',
      distinct_id: org.userId,
      uuid: projects[0]!.id,
      properties: {
        projectId: projects[0]!.id,
        key: projects[0]!.key,
        name: projects[0]!.name,
        actorId: org.userId,
        backfill: true,
        source: 'plinth',
        $groups: { organization: org.orgId },
      },
    });
    expect(typeof first.timestamp).toBe('string');

    // Again: history is deduplicated per connection + event, nothing is sent twice.
    const again = await call(org, 'POST', `${conns(org)}/${c.id}/backfill`, {});
    expect(again.statusCode).toBe(202);
    await waitFor(() => connection(org, c.id), (v) => v.backfillStatus === 'done');
    expect((await connection(org, c.id)).backfillCount).toBe(0);

    // A live event goes through the same path, keyed by its outbox event id.
    const live = await project(org);
    await waitFor(() => capturesFor(key), (b) => b.some((e: any) => e.properties.projectId === live.id));
    expect(capturesFor(key)).toHaveLength(4);
    // The vendor sees the request before the sender's transaction marks the delivery succeeded: wait for it.
    await waitFor(() => deliveries(org, c.id, 'succeeded'), (d) => d.length >= 4);
    expect(await deliveries(org, c.id, 'succeeded')).toHaveLength(4);
  });

  it('honours 429 + Retry-After: no call before it elapses, then delivered', async () => {
    const org = await signup(t.app);
    const key = 'phc_429';
    behaviours.set(key, (n) => (n === 1 ? { status: 429, headers: { 'retry-after': '1' } } : { status: 200 }));
    const c = await posthog(org, key);
    await project(org);
    await waitFor(() => deliveries(org, c.id, 'succeeded'), (d) => d.length === 1);
    const [limited, accepted] = batchesFor(key);
    // The jobs layer's backoff here is 30–120 ms; the vendor asked for 1 s.
    expect(accepted!.at - limited!.at).toBeGreaterThanOrEqual(950);
    const [d] = await deliveries(org, c.id);
    expect(d.attempts).toBeGreaterThanOrEqual(2);
  });

  it("dead-letters on bad credentials (401) without retrying, and replays once they are fixed", async () => {
    const org = await signup(t.app);
    behaviours.set('phc_revoked', () => ({ status: 401 }));
    const c = await posthog(org, 'phc_revoked');
    await project(org);
    const [dead] = await waitFor(() => deliveries(org, c.id, 'dead'), (d) => d.length === 1);
    expect(dead).toMatchObject({ attempts: 1, lastStatusCode: 401 });
    expect(batchesFor('phc_revoked')).toHaveLength(1);
    const health = await connection(org, c.id);
    expect(health).toMatchObject({ consecutiveFailures: 1, health: { deadLetters: 1, backlog: 0 } });
    expect(health.lastError).toContain('401');

    expect((await call(org, 'PATCH', `${conns(org)}/${c.id}`, { credentials: { projectApiKey: 'phc_rotated' } })).statusCode).toBe(200);
    const replay = await call(org, 'POST', `${conns(org)}/${c.id}/replay`, {});
    expect(replay.statusCode, replay.body).toBe(202);
    expect(replay.json()).toEqual({ replayed: 1 });
    await waitFor(() => deliveries(org, c.id, 'succeeded'), (d) => d.length === 1);
    expect(batchesFor('phc_rotated')).toHaveLength(1);
    expect((await connection(org, c.id)).health.deadLetters).toBe(0);
  });

  it("one org's vendor failing continuously (500) opens only its breaker; another org keeps syncing", async () => {
    const broken = await signup(t.app);
    const healthy = await signup(t.app);
    behaviours.set('phc_down', () => ({ status: 500 }));
    const b = await posthog(broken, 'phc_down');
    const h = await posthog(healthy, 'phc_up');
    const n = 6;
    for (let i = 0; i < n; i++) {
      await project(broken);
      await project(healthy);
    }
    await waitFor(() => deliveries(healthy, h.id, 'succeeded'), (d) => d.length === n);
    const down = await waitFor(() => connection(broken, b.id), (v) => v.health.breaker === 'open');
    expect(down.lastSuccessAt).toBeNull();
    expect(down.lastError).toMatch(/500|circuit open/);
    await waitFor(() => deliveries(broken, b.id, 'dead'), (d) => d.length === n, 20_000);
    // Once open, the breaker answers without calling the vendor: far fewer calls than attempts.
    expect(batchesFor('phc_down').length).toBeLessThan(n * 4);
    const up = await connection(healthy, h.id);
    expect(up).toMatchObject({ consecutiveFailures: 0, lastError: null, health: { breaker: 'closed', backlog: 0, deadLetters: 0 } });

    const metrics = await scrape();
    expect(metrics).toMatch(/plinth_integration_deliveries_total\{connector="posthog",outcome="succeeded"\} \d+/);
    expect(metrics).toMatch(/plinth_integration_deliveries_total\{connector="posthog",outcome="dead"\} \d+/);
  }, 30_000);
});

describe('Segment through @segment/analytics-node', () => {
  it('sends group + track calls in one /v1/batch request with the exact payload; a 500 is retried', async () => {
    const org = await signup(t.app);
    behaviours.set('/v1/batch', (n) => ({ status: n === 1 ? 500 : 200 }));
    const c = await connect(org, { connector: 'segment', name: 'Segment', config: { host: base }, credentials: { writeKey: 'wk_test' }, events: ['billing.subscription_updated'] });
    // Billing's subscription events, consumed by name (published here by the test: billing is not merged yet).
    const payload = { subscriptionId: 'sub_9', planKey: 'team', status: 'active', amountMinor: 9900, currency: 'EUR', actorId: org.userId };
    const event = await t.db.withTenant(org.orgId, (trx) => t.events.add(trx, { name: 'billing.subscription_updated', tenantId: org.orgId, payload }));
    await waitFor(() => deliveries(org, c.id, 'succeeded'), (d) => d.length === 1);
    const requests = captured.filter((r) => r.path === '/v1/batch');
    expect(requests).toHaveLength(2); // the 500, then the retry
    expect(Object.keys(requests[1]!.body).sort()).toEqual(["batch", "sentAt", "writeKey"]);
    expect(requests[1]!.headers.authorization).toBe(`Basic ${Buffer.from('wk_test:').toString('base64')}`);
    const [group, track] = requests[1]!.body.batch;
    expect(group).toMatchObject({ type: 'group', userId: org.userId, groupId: org.orgId });
    expect(track).toMatchObject({
      type: 'track',
      event: 'billing.subscription_updated',
      userId: org.userId,
      messageId: event.id,
      timestamp: event.occurredAt,
      properties: { ...payload, source: 'plinth' },
      context: { groupId: org.orgId },
    });
    expect((await deliveries(org, c.id))[0]).toMatchObject({ status: 'succeeded', attempts: 2 });
  });
});

const outboxOf = (orgId: string) => t.db.owner.selectFrom('outbox').select(['id', 'name', 'payload']).where('tenant_id', '=', orgId).orderBy('id').execute();

describe('analytics events: signup, org created, invitations, joins, subscriptions', () => {
  it('Segment: identify, group (with the org traits) and track calls, shaped for the SDK; an invitation never carries its e-mail or token', async () => {
    const org = await signup(t.app);
    await signupFannedOut(org.orgId);
    const writeKey = 'wk_analytics';
    const c = await connect(org, {
      connector: 'segment',
      name: 'Segment analytics',
      config: { host: base },
      credentials: { writeKey },
      events: ['tenancy.user_signed_up', 'tenancy.org_created', 'tenancy.invitation_created', 'tenancy.member_joined', 'billing.subscription_created', 'billing.subscription_updated'],
    });
    // The org and its owner from history (they predate the connection), then live facts.
    expect((await call(org, 'POST', `${conns(org)}/${c.id}/backfill`, {})).statusCode).toBe(202);
    await waitFor(() => connection(org, c.id), (v) => v.backfillStatus === 'done' && v.health.backlog === 0);
    const invitee = await signup(t.app);
    const inv = await call(org, 'POST', `/v1/orgs/${org.orgId}/invitations`, { email: invitee.email, role: 'member' });
    expect(inv.statusCode, inv.body).toBe(201);
    const token = inv.json().token as string;
    expect((await t.app.inject({ method: 'POST', url: `/v1/invitations/${token}/accept`, headers: invitee.auth })).statusCode).toBe(200);
    const sub = { subscriptionId: 'sub_an', status: 'trialing', planId: 'p1', planKey: 'team', priceId: 'pr1', interval: 'month', quantity: 1, amountMinor: 2900, currency: 'EUR', currencyExponent: 2, change: 'trial_started', previousStatus: null, currentPeriodEnd: '2027-01-01T00:00:00.000Z' };
    await t.db.withTenant(org.orgId, (trx) => t.events.add(trx, { name: 'billing.subscription_created', tenantId: org.orgId, payload: sub }));
    await waitFor(() => deliveries(org, c.id, 'succeeded'), (d) => d.length === 5); // org, owner, invitation, join, subscription

    const requests = captured.filter((r) => r.path === '/v1/batch' && r.body?.writeKey === writeKey);
    const messages = requests.flatMap((r) => r.body.batch);
    expect(JSON.stringify(requests)).not.toContain(invitee.email);
    expect(JSON.stringify(requests)).not.toContain(token);
    const tracks = messages.filter((m: any) => m.type === 'track');
    expect(tracks.map((m: any) => m.event).sort()).toEqual(['billing.subscription_created', 'tenancy.invitation_created', 'tenancy.member_joined', 'tenancy.member_joined', 'tenancy.org_created']);
    const identifies = messages.filter((m: any) => m.type === 'identify');
    expect(identifies.map((m: any) => m.userId).sort()).toEqual([org.userId, invitee.userId].sort());
    expect(identifies.find((m: any) => m.userId === invitee.userId)).toMatchObject({ type: 'identify', userId: invitee.userId, traits: { plinth_user_id: invitee.userId }, messageId: expect.stringMatching(/^identify-/) });
    const groups = messages.filter((m: any) => m.type === 'group');
    for (const g of groups) expect(g).toMatchObject({ type: 'group', groupId: org.orgId, traits: { plinth_org_id: org.orgId } });
    expect(groups.some((g: any) => typeof g.traits.name === 'string' && g.traits.name.length > 0)).toBe(true); // org_created's batch names the org
    expect(groups.some((g: any) => g.traits.plan === 'team' && g.traits.subscription_status === 'trialing')).toBe(true);
    const invited = tracks.find((m: any) => m.event === 'tenancy.invitation_created');
    expect(invited).toMatchObject({ userId: org.userId, context: { groupId: org.orgId } });
    expect(Object.keys(invited.properties).sort()).toEqual(['expiresAt', 'invitationId', 'role', 'source']);
    expect(tracks.find((m: any) => m.event === 'tenancy.member_joined' && m.userId === invitee.userId)).toMatchObject({ properties: { role: 'member', via: 'invitation', source: 'plinth' } });
    expect(tracks.find((m: any) => m.event === 'billing.subscription_created')).toMatchObject({ userId: `org:${org.orgId}`, properties: { subscriptionId: 'sub_an', planKey: 'team', change: 'trial_started' } });
    // The stored delivery of the invitation has neither (fan-out drops them before they are written).
    const stored = await t.db.owner.selectFrom('integration_deliveries').select('event').where('tenant_id', '=', org.orgId).where('event_name', '=', 'tenancy.invitation_created').executeTakeFirstOrThrow();
    expect(JSON.stringify(stored.event)).not.toMatch(new RegExp(`${token}|${invitee.email}`));
  });

  it('PostHog: $identify for a new user, $groupidentify with the org traits, capture in the organization group', async () => {
    const org = await signup(t.app);
    await signupFannedOut(org.orgId);
    const key = 'phc_identity';
    const c = await posthog(org, key, ['tenancy.user_signed_up', 'tenancy.org_created', 'tenancy.member_joined']);
    // Signup's own event (its payload as tenancy wrote it to the outbox), delivered through the connection.
    const signedUp = (await outboxOf(org.orgId)).find((r) => r.name === 'tenancy.user_signed_up')!;
    await t.db.withTenant(org.orgId, (trx) => t.events.add(trx, { name: 'tenancy.user_signed_up', tenantId: org.orgId, payload: signedUp.payload as object }));
    await waitFor(() => deliveries(org, c.id, 'succeeded'), (d) => d.length === 1);
    expect((await call(org, 'POST', `${conns(org)}/${c.id}/backfill`, {})).statusCode).toBe(202);
    await waitFor(() => deliveries(org, c.id, 'succeeded'), (d) => d.length === 3);
    const all = batchesFor(key).flatMap((r) => r.body.batch);
    const identify = all.filter((e: any) => e.event === '$identify');
    expect(identify.length).toBeGreaterThanOrEqual(1);
    expect(identify[0]).toMatchObject({ distinct_id: org.userId, properties: { $set: { plinth_user_id: org.userId } } });
    const groups = all.filter((e: any) => e.event === '$groupidentify');
    expect(groups.every((g: any) => g.properties.$group_type === 'organization' && g.properties.$group_key === org.orgId)).toBe(true);
    expect(groups.some((g: any) => typeof g.properties.$group_set.name === 'string' && g.properties.$group_set.plinth_org_id === org.orgId)).toBe(true);
    expect(all.find((e: any) => e.event === 'tenancy.user_signed_up')).toMatchObject({ distinct_id: org.userId, properties: { source: 'plinth', $groups: { organization: org.orgId } } });
    expect(all.find((e: any) => e.event === 'tenancy.member_joined')).toMatchObject({ distinct_id: org.userId, properties: { role: 'owner', via: 'backfill', $groups: { organization: org.orgId } } });
    expect(JSON.stringify(all)).not.toContain(org.email);
  });
});

describe('HubSpot through @hubspot/api-client', () => {
  it('upserts the org as a company and subscriptions as deals keyed by Plinth ids, associated; a 429 is retried; replays are idempotent', async () => {
    const org = await signup(t.app);
    const c = await connect(org, {
      connector: 'hubspot',
      name: 'CRM',
      config: { basePath: base },
      credentials: { accessToken: 'pat-test-token' },
      events: ['billing.subscription_created', 'billing.subscription_updated', 'billing.subscription_canceled'],
    });
    // Billing's subscription events, consumed by name (published here by the test: billing is not merged yet).
    const publish = (name: string, payload: object) => t.db.withTenant(org.orgId, (trx) => t.events.add(trx, { name, tenantId: org.orgId, payload }));
    await publish('billing.subscription_created', { subscriptionId: 'sub_A', planKey: 'team', status: 'trialing', amountMinor: 2900, currency: 'EUR' });
    await waitFor(() => deliveries(org, c.id, 'succeeded'), (d) => d.length === 1);
    expect(crm.dealUpserts).toBe(2); // the 429, then the retry
    const company = crm.companies.get(org.orgId)!;
    expect(company.properties).toEqual({ plinth_org_id: org.orgId });
    expect(crm.deals.get('sub_A')!.properties).toEqual({
      plinth_subscription_id: 'sub_A',
      dealname: 'Plinth team',
      amount: '29.00',
      deal_currency_code: 'EUR',
      dealstage: 'qualifiedtobuy',
      pipeline: 'default',
    });
    const dealId = crm.deals.get('sub_A')!.id;
    expect(crm.associations).toContain(`${dealId}->${company.id}`);
    expect(crm.tokens.every((a) => a === 'Bearer pat-test-token')).toBe(true);

    await publish('billing.subscription_updated', { subscriptionId: 'sub_A', planKey: 'business', status: 'active', amountMinor: 9900, currency: 'EUR' });
    await waitFor(() => deliveries(org, c.id, 'succeeded'), (d) => d.length === 2);
    expect(crm.deals.get('sub_A')!.properties.dealstage).toBe('closedwon');
    await publish('billing.subscription_canceled', { subscriptionId: 'sub_A', planKey: 'business', status: 'canceled', amountMinor: 9900, currency: 'EUR' });
    await waitFor(() => deliveries(org, c.id, 'succeeded'), (d) => d.length === 3);
    // The same records, updated: one company, one deal, one association.
    expect(crm.companies.size).toBeGreaterThanOrEqual(1);
    expect([...crm.companies.values()].filter((x) => x.properties.plinth_org_id === org.orgId)).toHaveLength(1);
    expect(crm.deals.get('sub_A')).toMatchObject({ id: dealId, properties: { dealname: 'Plinth business', amount: '99.00', dealstage: 'closedlost' } });
    expect(crm.associations.filter((a) => a.startsWith(`${dealId}->`))).toEqual([`${dealId}->${company.id}`]);
  });
});

describe('HubSpot contacts: members, resolved at delivery time', () => {
  it('members → contacts upserted by e-mail and associated with the company; role changes and removal converge; a 429 is retried; unknown users send nothing; events carry no address', async () => {
    const owner = await signup(t.app, { name: 'Ada Lovelace' });
    await signupFannedOut(owner.orgId);
    const c = await connect(owner, {
      connector: 'hubspot',
      name: 'CRM contacts',
      config: { basePath: base },
      credentials: { accessToken: 'pat-test-token' },
      events: ['tenancy.member_joined', 'tenancy.member_role_changed', 'tenancy.member_removed'],
    });
    const succeeded = (n: number) => waitFor(() => deliveries(owner, c.id, 'succeeded'), (d) => d.length === n);
    // History first: the owner (the members backfill), through the same path.
    expect((await call(owner, 'POST', `${conns(owner)}/${c.id}/backfill`, {})).statusCode).toBe(202);
    await succeeded(1);
    expect(crm.contactUpserts).toBeGreaterThanOrEqual(2); // the 429, then the retry
    const company = crm.companies.get(owner.orgId)!;
    const ada = crm.contacts.get(owner.email)!;
    expect(ada.properties).toEqual({ email: owner.email, firstname: 'Ada', lastname: 'Lovelace', plinth_user_id: owner.userId, plinth_role: 'owner' });
    expect(crm.contactCompany.has(`${ada.id}->${company.id}`)).toBe(true);

    // Live: an invited member joins, is promoted, then removed.
    const member = await signup(t.app, { name: 'Grace' });
    await addMember(t.app, owner, owner.orgId, member, 'member');
    await succeeded(2);
    const grace = crm.contacts.get(member.email)!;
    expect(grace.properties).toMatchObject({ email: member.email, firstname: 'Grace', lastname: '', plinth_user_id: member.userId, plinth_role: 'member' });
    expect(crm.contactCompany.has(`${grace.id}->${company.id}`)).toBe(true);
    expect((await call(owner, 'PATCH', `/v1/orgs/${owner.orgId}/members/${member.userId}`, { role: 'admin' })).statusCode).toBe(200);
    await succeeded(3);
    expect(crm.contacts.get(member.email)).toMatchObject({ id: grace.id, properties: { plinth_role: 'admin' } }); // the same record
    expect((await call(owner, 'DELETE', `/v1/orgs/${owner.orgId}/members/${member.userId}`)).statusCode).toBe(204);
    await succeeded(4);
    expect(crm.contacts.get(member.email)).toMatchObject({ id: grace.id, properties: { plinth_role: '' } });
    expect(crm.contactCompany.has(`${grace.id}->${company.id}`)).toBe(false);

    // What tenancy published for all this: ids only (no e-mail, no name), each fact in its change's transaction.
    const facts = (await outboxOf(owner.orgId)).filter((r) => r.name.startsWith('tenancy.') && r.name !== 'tenancy.invitation_created');
    const by = (name: string) => facts.filter((r) => r.name === name).map((r) => r.payload);
    expect(by('tenancy.user_signed_up')).toEqual([{ userId: owner.userId }]);
    expect(by('tenancy.org_created')).toEqual([{ orgId: owner.orgId, name: 'Test Org', createdBy: owner.userId, signup: true }]);
    expect(by('tenancy.member_joined')).toEqual([
      { userId: owner.userId, role: 'owner', via: 'signup', actorId: owner.userId },
      { userId: member.userId, role: 'member', via: 'invitation', actorId: member.userId },
    ]);
    expect(by('tenancy.member_role_changed')).toEqual([{ userId: member.userId, from: 'member', to: 'admin', via: 'member', actorId: owner.userId }]);
    expect(by('tenancy.member_removed')).toEqual([{ userId: member.userId, role: 'admin', via: 'removed', actorId: owner.userId }]);

    // A user the facades do not know (deleted or erased): delivered, and nothing about them is sent.
    const before = crm.contactUpserts;
    const ghost = '0190aaaa-0000-7000-8000-000000000001';
    await t.db.withTenant(owner.orgId, (trx) => t.events.add(trx, { name: 'tenancy.member_joined', tenantId: owner.orgId, payload: { userId: ghost, role: 'member', via: 'invitation', actorId: ghost } }));
    await succeeded(5);
    expect(crm.contactUpserts).toBe(before);
    // Replayed history adds nothing; a repeated fact updates the same contact.
    await t.db.withTenant(owner.orgId, (trx) => t.events.add(trx, { name: 'tenancy.member_joined', tenantId: owner.orgId, payload: { userId: owner.userId, role: 'owner', via: 'signup', actorId: owner.userId } }));
    await succeeded(6);
    expect([...crm.contacts.values()].filter((x) => x.properties.plinth_user_id === owner.userId)).toHaveLength(1);

    // Addresses went only to HubSpot: not into the outbox's membership facts nor the stored deliveries.
    const stored = await t.db.owner.selectFrom('integration_deliveries').select('event').where('tenant_id', '=', owner.orgId).execute();
    for (const text of [JSON.stringify(stored), JSON.stringify(facts)]) {
      expect(text).not.toContain(owner.email);
      expect(text).not.toContain(member.email);
    }
  });
});

describe('inbound HubSpot webhooks (v3 signature, inbox)', () => {
  it('verifies the signature, stores first, deduplicates, and processes asynchronously into integrations.inbound_event', async () => {
    const org = await signup(t.app);
    const c = await connect(org, { connector: 'hubspot', name: 'CRM in', config: { basePath: base }, credentials: { accessToken: 'pat-x', clientSecret: 'hs-client-secret' }, events: ['billing.subscription_updated'] });
    const path = `/v1/hooks/integrations/${org.orgId}/${c.id}`;
    const body = JSON.stringify([
      { eventId: 9001, subscriptionType: 'deal.propertyChange', objectId: 1234, propertyName: 'dealstage', propertyValue: 'closedwon', occurredAt: Date.now(), portalId: 42 },
    ]);
    const send = (opts: { secret?: string; timestamp?: number; payload?: string; url?: string } = {}) => {
      const timestamp = String(opts.timestamp ?? Date.now());
      const payload = opts.payload ?? body;
      const signature = hubspotSignatureV3(opts.secret ?? 'hs-client-secret', 'POST', `${t.config.notifications.publicUrl}${opts.url ?? path}`, payload, timestamp);
      return t.app.inject({ method: 'POST', url: opts.url ?? path, payload, headers: { 'content-type': 'application/json', 'x-hubspot-request-timestamp': timestamp, 'x-hubspot-signature-v3': signature } });
    };
    const first = await send();
    expect(first.statusCode, first.body).toBe(200);
    expect(first.json()).toEqual({ received: 1, duplicates: 0 });
    expect((await send()).json()).toEqual({ received: 0, duplicates: 1 });

    for (const bad of [await send({ secret: 'wrong' }), await send({ timestamp: Date.now() - 10 * 60_000 }), await t.app.inject({ method: 'POST', url: path, payload: body, headers: { 'content-type': 'application/json' } })]) {
      expect(bad.statusCode, bad.body).toBe(401);
      expect(bad.json().code).toBe('INTEGRATIONS.BAD_SIGNATURE');
    }
    // Signed for another org's path, or a connection without inbound webhooks: 404, nothing stored.
    const other = await signup(t.app);
    expect((await send({ url: `/v1/hooks/integrations/${other.orgId}/${c.id}` })).statusCode).toBe(404);
    const http = await connect(org, { connector: 'http', name: 'no inbound', config: { url: `${base}/x` }, credentials: {}, events: ['projects.task_created'] });
    expect((await send({ url: `/v1/hooks/integrations/${org.orgId}/${http.id}` })).statusCode).toBe(404);

    const inbox = () => t.db.owner.selectFrom('integration_inbox').select(['status', 'event_type', 'dedupe_key']).where('connection_id', '=', c.id).execute();
    expect(await waitFor(inbox, (rows) => rows.every((r) => r.status === 'processed'))).toEqual([{ status: 'processed', event_type: 'deal.propertyChange', dedupe_key: '9001' }]);
    const published = await waitFor(
      () => t.db.owner.selectFrom('outbox').select(['payload']).where('name', '=', 'integrations.inbound_event').where('tenant_id', '=', org.orgId).execute(),
      (rows) => rows.length === 1,
    );
    expect(published[0]!.payload).toMatchObject({ connector: 'hubspot', connectionId: c.id, type: 'deal.propertyChange', payload: { objectId: 1234, propertyName: 'dealstage', propertyValue: 'closedwon' } });
  });
});

describe('generic HTTP connector', () => {
  it('POSTs each event shaped by the mapping template, with the credential headers and an idempotency key', async () => {
    const org = await signup(t.app);
    const c = await connect(org, {
      connector: 'http',
      name: 'Zap',
      config: { url: `${base}/zap`, template: { kind: '{{event.name}}', task: { id: '{{payload.taskId}}', title: 'Task: {{payload.title}}' }, org: '{{event.tenantId}}', missing: '{{payload.nope}}', fixed: 7 } },
      credentials: { headers: { authorization: 'Bearer zap-secret' } },
      events: ['projects.task_created', 'billing.subscription_created'],
    });
    const p = await project(org);
    const task = (await call(org, 'POST', `/v1/orgs/${org.orgId}/projects/${p.id}/tasks`, { title: 'Ship it' })).json();
    const got = await waitFor(() => captured.filter((r) => r.path === '/zap'), (r) => r.length === 1);
    expect(got[0]!.body).toEqual({ kind: 'projects.task_created', task: { id: task.id, title: 'Task: Ship it' }, org: org.orgId, missing: null, fixed: 7 });
    expect(got[0]!.headers.authorization).toBe('Bearer zap-secret');
    expect(got[0]!.headers['idempotency-key']).toMatch(/^[0-9a-f-]{36}$/);

    await t.db.withTenant(org.orgId, (trx) =>
      t.events.add(trx, { name: 'billing.subscription_created', tenantId: org.orgId, payload: { subscriptionId: 'sub_1', planKey: 'pro', status: 'active', amountMinor: 4900, currency: 'EUR' } }),
    );
    const both = await waitFor(() => captured.filter((r) => r.path === '/zap'), (r) => r.length === 2);
    expect(both[1]!.body).toMatchObject({ kind: 'billing.subscription_created', org: org.orgId, task: { id: null, title: 'Task: ' } });
    // The endpoint has the request before the sender's transaction settles the delivery (seen on Postgres).
    await waitFor(() => deliveries(org, c.id, 'succeeded'), (d) => d.length === 2);
  });
});

/* ---- Managing connections over HTTP: permissions, validation against each connector's declared schema,
 * credentials encrypted at rest and never returned, audit, tenant isolation. ---- */
let owner: SignedUp;
let admin: SignedUp;
let member: SignedUp;
let other: SignedUp;
describe('connection management', () => {
  beforeAll(async () => {
    owner = await signup(t.app);
    other = await signup(t.app);
    admin = await signup(t.app);
    member = await signup(t.app);
    await addMember(t.app, owner, owner.orgId, admin, 'admin');
    await addMember(t.app, owner, owner.orgId, member, 'member');
  });
  const url = (org: string, rest = '') => `/v1/orgs/${org}/integrations${rest}`;
  const valid = {
    connector: 'posthog',
    name: 'Product analytics',
    config: { host: 'http://127.0.0.1:9' },
    credentials: { projectApiKey: 'phc_very_secret_key_123' },
    events: ['projects.project_created', 'billing.subscription_created'],
  };

  describe('integration connections', () => {
    it('creates, reads, updates and deletes a connection; credentials are sealed at rest and never returned', async () => {
      const created = await call(admin, 'POST', url(owner.orgId), valid);
      expect(created.statusCode, created.body).toBe(201);
      const c = created.json();
      expect(c).toMatchObject({
        connector: 'posthog',
        name: 'Product analytics',
        config: { host: 'http://127.0.0.1:9' },
        events: valid.events,
        active: true,
        lastSuccessAt: null,
        lastError: null,
        backfillStatus: 'idle',
        health: { backlog: 0, deadLetters: 0, breaker: 'closed' },
      });
      expect(created.headers.location).toBe(url(owner.orgId, `/${c.id}`));

      const reads = [
        created,
        await call(owner, 'GET', url(owner.orgId, `/${c.id}`)),
        await call(owner, 'GET', url(owner.orgId)),
        await call(owner, 'PATCH', url(owner.orgId, `/${c.id}`), { credentials: { projectApiKey: 'phc_rotated_secret_456' }, name: 'Renamed' }),
        await call(owner, 'GET', `/v1/orgs/${owner.orgId}/audit-events?limit=100`),
      ];
      for (const r of reads) {
        expect(r.statusCode, r.body).toBe(200 + (r === created ? 1 : 0));
        expect(r.body).not.toContain('phc_very_secret');
        expect(r.body).not.toContain('phc_rotated_secret');
      }
      expect(reads[3]!.json().name).toBe('Renamed');
      expect(reads[4]!.json().data.map((e: any) => e.action)).toEqual(expect.arrayContaining(['integrations.connection.created', 'integrations.connection.updated']));

      const row = await t.db.owner.selectFrom('integration_connections').select('credentials_ciphertext').where('id', '=', c.id).executeTakeFirstOrThrow();
      expect(row.credentials_ciphertext).toMatch(/^v1\./);
      expect(row.credentials_ciphertext).not.toContain('phc_');

      const connectors = await call(owner, 'GET', url(owner.orgId, '/connectors'));
      expect(connectors.statusCode).toBe(200);
      expect(connectors.json().data.map((x: any) => x.name).sort()).toEqual(['http', 'hubspot', 'posthog', 'segment']);

      expect((await call(owner, 'DELETE', url(owner.orgId, `/${c.id}`))).statusCode).toBe(204);
      expect((await call(owner, 'GET', url(owner.orgId, `/${c.id}`))).statusCode).toBe(404);
    });

    it('refuses bad input with problem+json: unknown connector, config or credentials off the schema, events the connector does not consume, forbidden URLs, duplicate names', async () => {
      const cases: Array<[object, number, string]> = [
        [{ ...valid, connector: 'salesforce' }, 400, 'INTEGRATIONS.UNKNOWN_CONNECTOR'],
        [{ ...valid, config: { host: 'http://127.0.0.1:9', extra: 1 } }, 400, 'INTEGRATIONS.INVALID_CONFIG'],
        [{ ...valid, credentials: {} }, 400, 'INTEGRATIONS.INVALID_CONFIG'],
        [{ ...valid, events: ['projects.project_deleted_forever'] }, 400, 'INTEGRATIONS.INVALID_CONFIG'],
        [{ ...valid, connector: 'http', config: { url: 'http://10.0.0.5/hook' }, credentials: {} }, 400, 'INTEGRATIONS.INVALID_CONFIG'],
        [{ ...valid, config: { host: 'ftp://example.com' } }, 400, 'INTEGRATIONS.INVALID_CONFIG'],
        [{ ...valid, name: '' }, 400, 'VALIDATION'],
        [{ ...valid, surprise: true }, 400, 'VALIDATION'],
      ];
      for (const [body, status, code] of cases) {
        const res = await call(owner, 'POST', url(owner.orgId), body);
        expect(res.statusCode, `${JSON.stringify(body)} → ${res.body}`).toBe(status);
        expect(res.headers['content-type']).toContain('application/problem+json');
        if (!code.startsWith('VALIDATION')) expect(res.json().code).toBe(code);
        expect(res.body).not.toContain('phc_very_secret');
      }
      expect((await call(owner, 'POST', url(owner.orgId), { ...valid, name: 'Twice' })).statusCode).toBe(201);
      const dup = await call(owner, 'POST', url(owner.orgId), { ...valid, name: 'Twice' });
      expect(dup.statusCode).toBe(409);
      expect(dup.json().code).toBe('INTEGRATIONS.NAME_TAKEN');
    });

    it('is for admins: a member gets 403; another org gets 404 for this org’s connection', async () => {
      const c = (await call(owner, 'POST', url(owner.orgId), { ...valid, name: 'Admins only' })).json();
      expect((await call(member, 'GET', url(owner.orgId))).statusCode).toBe(403);
      expect((await call(member, 'POST', url(owner.orgId), valid)).statusCode).toBe(403);
      expect((await call(other, 'GET', url(other.orgId, `/${c.id}`))).statusCode).toBe(404);
      expect((await call(other, 'PATCH', url(other.orgId, `/${c.id}`), { active: false })).statusCode).toBe(404);
      expect((await call(other, 'POST', url(other.orgId, `/${c.id}/replay`), {})).statusCode).toBe(404);
      expect((await call(other, 'POST', url(other.orgId, `/${c.id}/backfill`), {})).statusCode).toBe(404);
      expect((await call(other, 'GET', url(other.orgId))).json().data).toEqual([]);
    });
  });

  describe('connector helpers', () => {
    it('maps events through a JSON template: whole placeholders keep their type, embedded ones interpolate, unknown paths are null', () => {
      const e = { id: 'e1', name: 'projects.task_created', tenantId: 'org1', occurredAt: '2026-01-01T00:00:00.000Z', payload: { number: 7, tags: ['a'] } };
      expect(applyTemplate({ n: '{{payload.number}}', t: '{{payload.tags}}', s: '#{{payload.number}} in {{event.tenantId}}', x: '{{payload.none}}', k: [1, '{{event.id}}'] }, e)).toEqual({
        n: 7,
        t: ['a'],
        s: '#7 in org1',
        x: null,
        k: [1, 'e1'],
      });
    });

    it('reads Retry-After as seconds or an HTTP date', () => {
      expect(parseRetryAfter('3')).toBe(3000);
      expect(parseRetryAfter(new Date(Date.now() + 10_000).toUTCString())).toBeGreaterThan(8_000);
      expect(parseRetryAfter('soon')).toBeUndefined();
      expect(parseRetryAfter(null)).toBeUndefined();
    });

    it('applies the webhook SSRF rules: strict mode refuses http and private or loopback addresses', async () => {
      expect(await outboundUrlProblem('http://127.0.0.1:8080/x', { strict: false })).toBeNull();
      expect(await outboundUrlProblem('http://example.com/x', { strict: false })).toMatch(/https/);
      expect(await outboundUrlProblem('http://127.0.0.1/x', { strict: true })).toMatch(/https/);
      expect(await outboundUrlProblem('https://10.1.2.3/x', { strict: true })).toMatch(/private/);
      expect(await outboundUrlProblem('https://[::1]/x', { strict: true })).toMatch(/private/);
      expect(await outboundUrlProblem('https://169.254.169.254/latest', { strict: true })).toMatch(/private/);
      expect(await outboundUrlProblem('https://user:pw@93.184.216.34/', { strict: true })).toMatch(/credentials/);
      expect(await outboundUrlProblem('https://93.184.216.34/x', { strict: true })).toBeNull();
    });
  });
});
