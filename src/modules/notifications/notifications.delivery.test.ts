import { createServer, type IncomingHttpHeaders, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Writable } from 'node:stream';
import { sql } from 'kysely';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { signup, type SignedUp } from '../../../test/helpers/auth.ts';
import { createTestPlatform, type TestPlatform } from '../../../test/helpers/test-platform.ts';
import { createMemoryMailer, verifySignature } from './index.ts';

/**
 * Webhook delivery end to end on the real composition and the real event bus: projects publishes through
 * the outbox, notifications fans out and POSTs to a real HTTP receiver on 127.0.0.1, retried by the jobs
 * layer. Also the invitation e-mail through the mailer seam.
 */
type Behaviour = (n: number) => number | 'hang';
interface Received {
  path: string;
  headers: IncomingHttpHeaders;
  body: string;
}

let t: TestPlatform;
let server: Server;
let base: string;
const received: Received[] = [];
const behaviours = new Map<string, Behaviour>();
const logLines: string[] = [];
const mailer = createMemoryMailer(pino({ level: 'silent' }));

beforeAll(async () => {
  server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => {
      const path = req.url ?? '';
      received.push({ path, headers: req.headers, body: Buffer.concat(chunks).toString('utf8') });
      const n = received.filter((r) => r.path === path).length;
      const outcome = (behaviours.get(path) ?? (() => 200))(n);
      if (outcome === 'hang') return; // never answers: the sender's timeout must fire
      res.writeHead(outcome).end();
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  const sink = new Writable({
    write(chunk, _enc, cb) {
      logLines.push(String(chunk));
      cb();
    },
  });
  t = await createTestPlatform({
    logger: pino({ level: 'debug' }, sink),
    env: {
      JOBS_POLL_MS: '20',
      WEBHOOK_MAX_ATTEMPTS: '3',
      WEBHOOK_BACKOFF_BASE_MS: '40',
      WEBHOOK_BACKOFF_MAX_MS: '200',
      WEBHOOK_TIMEOUT_MS: '400',
      WEBHOOK_DISABLE_AFTER_FAILURES: '2',
      PUBLIC_URL: 'https://app.plinth.test',
    },
    seams: { mailer },
  });
  await t.events.startWorker();
}, 120_000);
afterAll(async () => {
  server.closeAllConnections();
  await new Promise((r) => server.close(r));
  await t?.close();
});

async function waitFor<T>(probe: () => Promise<T> | T, done: (v: T) => boolean, timeoutMs = 15_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await probe();
    if (done(v)) return v;
    if (Date.now() > deadline) throw new Error(`condition not met within ${timeoutMs} ms: ${JSON.stringify(v).slice(0, 500)}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function call(who: SignedUp, method: string, url: string, payload?: unknown) {
  return t.app.inject({ method: method as any, url, headers: who.auth, ...(payload !== undefined ? { payload: payload as any } : {}) });
}

let seq = 0;
async function hook(who: SignedUp, behaviour?: Behaviour, events = ['projects.project_created']) {
  const path = `/hook-${++seq}`;
  if (behaviour) behaviours.set(path, behaviour);
  const res = await call(who, 'POST', `/v1/orgs/${who.orgId}/webhooks`, { url: base + path, events });
  expect(res.statusCode, res.body).toBe(201);
  return { ...res.json(), path } as { id: string; secret: string; path: string };
}

async function createProject(who: SignedUp) {
  const res = await call(who, 'POST', `/v1/orgs/${who.orgId}/projects`, { key: `P${++seq}`, name: 'Hooked' });
  expect(res.statusCode, res.body).toBe(201);
  return res.json();
}

const at = (path: string) => received.filter((r) => r.path === path);

async function deliveries(who: SignedUp, webhookId: string) {
  const res = await call(who, 'GET', `/v1/orgs/${who.orgId}/webhooks/${webhookId}/deliveries`);
  expect(res.statusCode, res.body).toBe(200);
  return res.json().data as Array<Record<string, any>>;
}

function settledDelivery(who: SignedUp, webhookId: string, status: string) {
  return waitFor(() => deliveries(who, webhookId), (d) => d.length > 0 && d[0]!.status === status);
}

describe('webhook delivery', () => {
  it('signs and delivers one POST per event per subscribed endpoint, retrying 500s, and a redelivered job sends nothing twice', async () => {
    const org = await signup(t.app);
    const flaky = await hook(org, (n) => (n <= 2 ? 500 : 204));
    const steady = await hook(org);
    const other = await hook(org, undefined, ['projects.comment_added']);
    const project = await createProject(org);

    const [d] = await settledDelivery(org, flaky.id, 'succeeded');
    await settledDelivery(org, steady.id, 'succeeded');
    expect(d).toMatchObject({ attempts: 3, lastStatusCode: 204, lastErrorKind: null, eventType: 'projects.project_created' });
    expect(at(flaky.path)).toHaveLength(3);
    expect(at(steady.path)).toHaveLength(1);
    expect(at(other.path)).toHaveLength(0);

    for (const [h, r] of [[flaky, at(flaky.path)[2]!], [steady, at(steady.path)[0]!]] as const) {
      const headers = { id: String(r.headers['webhook-id']), timestamp: String(r.headers['webhook-timestamp']), signature: String(r.headers['webhook-signature']) };
      expect(verifySignature(h.secret, headers, r.body)).toBe(true);
      expect(verifySignature(other.secret, headers, r.body)).toBe(false);
      expect(verifySignature(h.secret, headers, r.body.replace('Hooked', 'Hacked'))).toBe(false);
      expect(r.headers['content-type']).toBe('application/json');
      const body = JSON.parse(r.body);
      expect(body).toEqual({ id: headers.id, type: 'projects.project_created', occurredAt: expect.any(String), orgId: org.orgId, data: expect.objectContaining({ projectId: project.id }) });
    }
    // Every attempt carried the same Webhook-Id (the event id): receivers deduplicate on it.
    expect(new Set(at(flaky.path).map((r) => r.headers['webhook-id'])).size).toBe(1);

    // The worker delivers the job again (e.g. it crashed after sending, before acknowledging): nothing is sent twice.
    await sql`update job_deliveries set status = 'pending' where consumer = 'notifications.webhook_sender' and tenant_id = ${org.orgId}`.execute(t.db.owner);
    await t.events.sweepOnce(0);
    await sql`delete from processed_events where consumer = 'notifications.webhook_sender' and tenant_id = ${org.orgId}`.execute(t.db.owner);
    await sql`update job_deliveries set status = 'pending' where consumer = 'notifications.webhook_sender' and tenant_id = ${org.orgId}`.execute(t.db.owner);
    await t.events.sweepOnce(0);
    await waitFor(
      async () => (await sql<{ n: number }>`select count(*)::int as n from job_deliveries where tenant_id = ${org.orgId} and status = 'pending'`.execute(t.db.owner)).rows[0]!.n,
      (n) => n === 0,
    );
    await sleep(150);
    expect(at(flaky.path)).toHaveLength(3);
    expect(at(steady.path)).toHaveLength(1);
    expect(await deliveries(org, flaky.id)).toHaveLength(1);
  });

  it('does not retry a 4xx, retries 429 and a timeout (transient)', async () => {
    const org = await signup(t.app);
    const gone = await hook(org, () => 404);
    const limited = await hook(org, (n) => (n === 1 ? 429 : 200));
    const slow = await hook(org, (n) => (n === 1 ? 'hang' : 200));
    await createProject(org);

    const [failed] = await settledDelivery(org, gone.id, 'failed');
    expect(failed).toMatchObject({ attempts: 1, lastStatusCode: 404, lastErrorKind: 'http_4xx' });
    await settledDelivery(org, limited.id, 'succeeded');
    const [timedOut] = await settledDelivery(org, slow.id, 'succeeded');
    expect(at(limited.path)).toHaveLength(2);
    expect(at(slow.path)).toHaveLength(2);
    expect(timedOut).toMatchObject({ attempts: 2, lastStatusCode: 200 });
    await sleep(300); // well past the retry backoff: a 4xx is never sent again
    expect(at(gone.path)).toHaveLength(1);
  });

  it('dead-letters after the maximum attempts; redeliver sends it again once the receiver is fixed', async () => {
    const org = await signup(t.app);
    let healthy = false;
    const down = await hook(org, () => (healthy ? 200 : 503));
    await createProject(org);
    const [dead] = await settledDelivery(org, down.id, 'dead');
    expect(dead).toMatchObject({ attempts: 3, lastStatusCode: 503, lastErrorKind: 'http_5xx' });
    expect(at(down.path)).toHaveLength(3);
    const job = await waitFor(
      () => t.db.owner.selectFrom('job_deliveries').select(['status', 'attempts']).where('consumer', '=', 'notifications.webhook_sender').where('tenant_id', '=', org.orgId).executeTakeFirst(),
      (j) => j?.status === 'dead',
    );
    expect(job).toMatchObject({ status: 'dead', attempts: 3 });

    healthy = true;
    const url = `/v1/orgs/${org.orgId}/webhooks/${down.id}/deliveries/${dead!.id}/redeliver`;
    const res = await call(org, 'POST', url);
    expect(res.statusCode, res.body).toBe(202);
    expect(res.json()).toMatchObject({ id: dead!.id, status: 'pending' });
    const [ok] = await settledDelivery(org, down.id, 'succeeded');
    expect(ok).toMatchObject({ id: dead!.id, attempts: 4, lastStatusCode: 200 });
    expect(at(down.path)).toHaveLength(4);
    expect(new Set(at(down.path).map((r) => r.headers['webhook-id'])).size).toBe(1);
    // A pending delivery cannot be redelivered on top of itself; an unknown one is a 404.
    const audit = (await call(org, 'GET', `/v1/orgs/${org.orgId}/audit-events?limit=50`)).json().data.map((e: any) => e.action);
    expect(audit).toContain('notifications.webhook.redelivered');
    expect((await call(org, 'POST', `/v1/orgs/${org.orgId}/webhooks/${down.id}/deliveries/${down.id}/redeliver`)).statusCode).toBe(404);
  });

  it('disables an endpoint after consecutive failed deliveries, audits it, and sends it nothing more', async () => {
    const org = await signup(t.app);
    const broken = await hook(org, () => 410);
    await createProject(org);
    await settledDelivery(org, broken.id, 'failed');
    await createProject(org);
    const endpoint = await waitFor(
      async () => (await call(org, 'GET', `/v1/orgs/${org.orgId}/webhooks/${broken.id}`)).json(),
      (w) => w.active === false,
    );
    expect(endpoint).toMatchObject({ active: false, consecutiveFailures: 2, disabledReason: expect.stringContaining('2 consecutive') });
    const audit = (await call(org, 'GET', `/v1/orgs/${org.orgId}/audit-events?limit=50`)).json().data;
    const disabled = audit.find((e: any) => e.action === 'notifications.webhook.auto_disabled');
    expect(disabled).toMatchObject({ target: { type: 'webhook', id: broken.id }, actor: { type: 'system' } });

    await createProject(org);
    await sleep(300);
    expect(at(broken.path)).toHaveLength(2);
    expect(await deliveries(org, broken.id)).toHaveLength(2);

    // Re-enabling resets the count.
    const on = await call(org, 'PATCH', `/v1/orgs/${org.orgId}/webhooks/${broken.id}`, { active: true });
    expect(on.json()).toMatchObject({ active: true, consecutiveFailures: 0, disabledReason: null });
  });

  it('paginates the delivery log with keyset cursors', async () => {
    const org = await signup(t.app);
    const h = await hook(org);
    for (let i = 0; i < 3; i++) await createProject(org);
    await waitFor(() => deliveries(org, h.id), (d) => d.length === 3 && d.every((x) => x.status === 'succeeded'));
    const seen: string[] = [];
    let cursor: string | null = null;
    do {
      const res = await call(org, 'GET', `/v1/orgs/${org.orgId}/webhooks/${h.id}/deliveries?limit=2${cursor ? `&cursor=${cursor}` : ''}`);
      expect(res.statusCode, res.body).toBe(200);
      seen.push(...res.json().data.map((d: any) => d.id));
      cursor = res.json().nextCursor;
    } while (cursor);
    expect(seen).toHaveLength(3);
    expect([...seen].sort().reverse()).toEqual(seen);
  });

  it('e-mails the invitee the accept link when an invitation is created', async () => {
    const org = await signup(t.app);
    const email = `invitee-${seq++}@example.com`;
    const inv = await call(org, 'POST', `/v1/orgs/${org.orgId}/invitations`, { email, role: 'member' });
    expect(inv.statusCode, inv.body).toBe(201);
    const mail = await waitFor(() => mailer.sent.find((m) => m.to === email), (m) => m !== undefined);
    expect(mail!.text).toContain(`https://app.plinth.test/invitations/${encodeURIComponent(inv.json().token)}`);
    expect(mailer.sent.filter((m) => m.to === email)).toHaveLength(1);
  });

  it('never writes a signing secret to the logs', async () => {
    const org = await signup(t.app);
    const h = await hook(org, (n) => (n === 1 ? 500 : 200));
    await createProject(org);
    await settledDelivery(org, h.id, 'succeeded');
    const logs = logLines.join('');
    expect(logs).toContain('webhook delivered');
    expect(logs).not.toContain(h.secret);
    expect(logs).not.toContain(h.secret.slice(6));
  });
});
