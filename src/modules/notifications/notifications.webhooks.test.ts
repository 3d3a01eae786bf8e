import { Writable } from 'node:stream';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { addMember, signup, type SignedUp } from '../../../test/helpers/auth.ts';
import { createTestPlatform, type TestPlatform } from '../../../test/helpers/test-platform.ts';

/**
 * Webhook endpoints through HTTP on the real composition: permissions, validation (problem+json), the
 * signing secret shown once and never again (nor logged), audit, pagination, tenant isolation.
 */
let t: TestPlatform;
let ownerA: SignedUp;
let adminA: SignedUp;
let memberA: SignedUp;
let ownerB: SignedUp;
const logLines: string[] = [];

beforeAll(async () => {
  const sink = new Writable({
    write(chunk, _enc, cb) {
      logLines.push(String(chunk));
      cb();
    },
  });
  t = await createTestPlatform({ logger: pino({ level: 'trace' }, sink) });
  ownerA = await signup(t.app, { organizationName: 'Org A' });
  ownerB = await signup(t.app, { organizationName: 'Org B' });
  adminA = await signup(t.app);
  memberA = await signup(t.app);
  await addMember(t.app, ownerA, ownerA.orgId, adminA, 'admin');
  await addMember(t.app, ownerA, ownerA.orgId, memberA, 'member');
}, 120_000);
afterAll(async () => t?.close());

const hooks = (org: string) => `/v1/orgs/${org}/webhooks`;
const valid = { url: 'http://127.0.0.1:9/hook', events: ['projects.task_created'], description: 'CI' };

function call(who: SignedUp, method: string, url: string, payload?: unknown) {
  return t.app.inject({ method: method as any, url, headers: who.auth, ...(payload !== undefined ? { payload: payload as any } : {}) });
}

async function create(who: SignedUp, body: object = valid) {
  const res = await call(who, 'POST', hooks(who.orgId === ownerB.orgId ? ownerB.orgId : ownerA.orgId), body);
  expect(res.statusCode, res.body).toBe(201);
  return res.json();
}

describe('webhook endpoints', () => {
  it('creates an endpoint and shows its secret exactly once (never in reads, lists, updates, or logs)', async () => {
    const created = await create(ownerA);
    expect(created).toMatchObject({ url: valid.url, events: valid.events, description: 'CI', active: true, consecutiveFailures: 0 });
    expect(created.secret).toMatch(/^whsec_[A-Za-z0-9+/]{43}=$/);
    expect(Buffer.from(created.secret.slice(6), 'base64')).toHaveLength(32);

    const reads = [
      await call(ownerA, 'GET', `${hooks(ownerA.orgId)}/${created.id}`),
      await call(ownerA, 'GET', hooks(ownerA.orgId)),
      await call(ownerA, 'PATCH', `${hooks(ownerA.orgId)}/${created.id}`, { description: 'renamed' }),
    ];
    for (const r of reads) {
      expect(r.statusCode, r.body).toBe(200);
      expect(r.body).not.toContain(created.secret);
      expect(r.body).not.toContain('secret');
    }
    const audit = await call(ownerA, 'GET', `/v1/orgs/${ownerA.orgId}/audit-events?limit=100`);
    expect(audit.statusCode, audit.body).toBe(200);
    expect(audit.body).not.toContain(created.secret);
    expect(audit.json().data.map((e: any) => e.action)).toEqual(
      expect.arrayContaining(['notifications.webhook.created', 'notifications.webhook.updated']),
    );
    const logs = logLines.join('');
    expect(logs.length).toBeGreaterThan(0);
    expect(logs).not.toContain(created.secret);
    expect(logs).not.toContain(created.secret.slice(6));

    // At rest it is encrypted: the stored value is neither the secret nor contains it.
    const row = await t.db.owner.selectFrom('webhook_endpoints').select('secret_ciphertext').where('id', '=', created.id).executeTakeFirstOrThrow();
    expect(row.secret_ciphertext).toMatch(/^v1\./);
    expect(row.secret_ciphertext).not.toContain(created.secret.slice(6, 20));
  });

  it('owner and admin manage webhooks; a member cannot (403), an anonymous caller gets 401', async () => {
    await create(adminA);
    const denied = await call(memberA, 'POST', hooks(ownerA.orgId), valid);
    expect(denied.statusCode).toBe(403);
    expect(denied.headers['content-type']).toContain('application/problem+json');
    expect((await call(memberA, 'GET', hooks(ownerA.orgId))).statusCode).toBe(403);
    expect((await t.app.inject({ method: 'GET', url: hooks(ownerA.orgId) })).statusCode).toBe(401);
  });

  it('updates, re-enables and deletes, each audited', async () => {
    const w = await create(ownerA);
    const off = await call(ownerA, 'PATCH', `${hooks(ownerA.orgId)}/${w.id}`, { active: false, events: ['projects.comment_added', 'projects.task_updated'] });
    expect(off.statusCode, off.body).toBe(200);
    expect(off.json()).toMatchObject({ active: false, events: ['projects.comment_added', 'projects.task_updated'] });
    const noop = await call(ownerA, 'PATCH', `${hooks(ownerA.orgId)}/${w.id}`, { active: false });
    expect(noop.json().updatedAt).toBe(off.json().updatedAt);
    const del = await call(ownerA, 'DELETE', `${hooks(ownerA.orgId)}/${w.id}`);
    expect(del.statusCode).toBe(204);
    expect((await call(ownerA, 'GET', `${hooks(ownerA.orgId)}/${w.id}`)).statusCode).toBe(404);
    expect((await call(ownerA, 'DELETE', `${hooks(ownerA.orgId)}/${w.id}`)).statusCode).toBe(404);
    const actions = (await call(ownerA, 'GET', `/v1/orgs/${ownerA.orgId}/audit-events?limit=100`)).json().data.map((e: any) => `${e.action}:${e.target.id}`);
    expect(actions).toEqual(expect.arrayContaining([`notifications.webhook.updated:${w.id}`, `notifications.webhook.deleted:${w.id}`]));
  });

  it('lists with keyset pagination', async () => {
    const org = await signup(t.app);
    const ids: string[] = [];
    for (let i = 0; i < 3; i++) ids.push((await call(org, 'POST', hooks(org.orgId), valid)).json().id);
    const seen: string[] = [];
    let cursor: string | null = null;
    do {
      const res = await call(org, 'GET', `${hooks(org.orgId)}?limit=2${cursor ? `&cursor=${cursor}` : ''}`);
      expect(res.statusCode, res.body).toBe(200);
      seen.push(...res.json().data.map((w: any) => w.id));
      cursor = res.json().nextCursor;
    } while (cursor);
    expect(seen).toEqual(ids);
    expect((await call(org, 'GET', `${hooks(org.orgId)}?cursor=bogus`)).statusCode).toBe(400);
  });

  it('rejects bad input with problem+json: unknown event, over-long url, non-http(s), http to a non-loopback host, extra fields', async () => {
    const bad: Array<[object, number]> = [
      [{ ...valid, events: ['projects.task_deleted_everything'] }, 400],
      [{ ...valid, events: [] }, 400],
      [{ ...valid, url: `https://example.com/${'a'.repeat(2100)}` }, 400],
      [{ ...valid, url: 'ftp://127.0.0.1/x' }, 422],
      [{ ...valid, url: 'http://example.com/hook' }, 422],
      [{ ...valid, url: 'http://10.0.0.5/hook' }, 422],
      [{ ...valid, url: 'https://user:pw@example.com/hook' }, 422],
      [{ ...valid, url: 'not a url' }, 422],
      [{ ...valid, secret: 'mine' }, 400],
      [{ ...valid, active: 'yes' }, 400],
    ];
    for (const [body, status] of bad) {
      const res = await call(ownerA, 'POST', hooks(ownerA.orgId), body);
      expect(res.statusCode, `${JSON.stringify(body).slice(0, 120)} → ${res.body}`).toBe(status);
      expect(res.headers['content-type']).toContain('application/problem+json');
      expect(res.json()).toMatchObject({ status, requestId: expect.any(String), code: expect.any(String) });
    }
    const w = await create(ownerA);
    const patch = await call(ownerA, 'PATCH', `${hooks(ownerA.orgId)}/${w.id}`, { url: 'http://example.com/x' });
    expect(patch.statusCode).toBe(422);
    expect(patch.json().code).toBe('NOTIFICATIONS.INVALID_URL');
    expect((await call(ownerA, 'PATCH', `${hooks(ownerA.orgId)}/${w.id}`, {})).statusCode).toBe(400);
  });

  it("org A cannot read or change org B's webhooks or deliveries (404) and nothing changes", async () => {
    const bHook = await create(ownerB);
    const base = `${hooks(ownerA.orgId)}/${bHook.id}`;
    const deliveryId = '0190a0a0-0000-7000-8000-000000000000';
    for (const [method, url, body] of [
      ['GET', base, undefined],
      ['PATCH', base, { active: false }],
      ['DELETE', base, undefined],
      ['GET', `${base}/deliveries`, undefined],
      ['POST', `${base}/deliveries/${deliveryId}/redeliver`, undefined],
    ] as const) {
      const res = await call(ownerA, method, url, body);
      expect(res.statusCode, `${method} ${url}`).toBe(404);
      expect(res.body).not.toContain(bHook.url);
    }
    // Addressing org B directly with A's token is a 404 as well.
    expect((await call(ownerA, 'GET', `${hooks(ownerB.orgId)}/${bHook.id}`)).statusCode).toBe(404);
    const still = await call(ownerB, 'GET', `${hooks(ownerB.orgId)}/${bHook.id}`);
    expect(still.json()).toMatchObject({ active: true });
    expect((await call(ownerA, 'GET', hooks(ownerA.orgId))).body).not.toContain(bHook.id);
  });
});
