import { createHash } from 'node:crypto';
import { sql } from 'kysely';
import { createServer, type IncomingHttpHeaders, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { signup, type SignedUp } from '../helpers/auth.ts';
import { waitFor } from '../helpers/jobs.ts';
import { createTestPlatform, type TestPlatform } from '../helpers/test-platform.ts';
import { verifySignature } from '../../src/modules/notifications/index.ts';

const mode = `${process.env.TEST_DATABASE_URL ? 'postgres' : 'pglite'}${process.env.TEST_REDIS_URL ? '+redis' : ''}`;

/**
 * The customer's side, written from the documented recipe only (audit README, "Verify an export"): no
 * Plinth code. hash = sha256(prevHash + "\n" + canonical JSON of the hashed fields), keys sorted.
 */
const canonical = (v: unknown): string =>
  v === null || typeof v !== 'object'
    ? JSON.stringify(v ?? null)
    : Array.isArray(v)
      ? `[${v.map(canonical).join(',')}]`
      : `{${Object.entries(v as Record<string, unknown>)
          .filter(([, x]) => x !== undefined)
          .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
          .map(([k, x]) => `${JSON.stringify(k)}:${canonical(x)}`)
          .join(',')}}`;

interface Link {
  orgId: string;
  seq: number;
  id: string;
  occurredAt: string;
  actorType: string;
  actorId: string;
  actorUserId: string | null;
  action: string;
  targetType: string;
  targetId: string;
  requestId: string | null;
  ip: string | null;
  changes: unknown;
  pdRef: string | null;
  prevHash: string;
  hash: string;
}

/** Problems found walking the links in seq order from `start` (the hash before the first one). */
function verifyOffline(links: Link[], start: string): string[] {
  const problems: string[] = [];
  let prev = start;
  for (const l of links) {
    if (l.prevHash !== prev) problems.push(`seq ${l.seq}: broken link`);
    const body = canonical({
      tenantId: l.orgId, id: l.id, seq: l.seq, occurredAt: l.occurredAt, actorType: l.actorType, actorId: l.actorId, actorUserId: l.actorUserId,
      action: l.action, targetType: l.targetType, targetId: l.targetId, requestId: l.requestId, ip: l.ip, changes: l.changes, pdRef: l.pdRef ?? undefined,
    });
    if (createHash('sha256').update(l.prevHash).update('\n').update(body).digest('hex') !== l.hash) problems.push(`seq ${l.seq}: hash mismatch`);
    prev = l.hash;
  }
  return problems;
}

describe(`audit streaming to a webhook and NDJSON export with the chain (${mode})`, () => {
  let t: TestPlatform;
  let server: Server;
  let base: string;
  let owner: SignedUp;
  let quiet: SignedUp;
  const received: Array<{ headers: IncomingHttpHeaders; body: string; accepted: boolean }> = [];
  let failFirst = 2;

  beforeAll(async () => {
    server = createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c) => chunks.push(c));
      req.on('end', () => {
        // The receiver fails at first: those deliveries are retried (at-least-once).
        const accepted = failFirst-- <= 0;
        received.push({ headers: req.headers, body: Buffer.concat(chunks).toString('utf8'), accepted });
        res.writeHead(accepted ? 204 : 503).end();
      });
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    t = await createTestPlatform({ env: { JOBS_POLL_MS: '20', WEBHOOK_BACKOFF_BASE_MS: '40', WEBHOOK_BACKOFF_MAX_MS: '200' } });
    owner = await signup(t.app, { organizationName: 'Streams' });
    quiet = await signup(t.app, { organizationName: 'No SIEM' });
  });
  afterAll(async () => {
    server.closeAllConnections();
    await new Promise((r) => server.close(r));
    await t?.close();
  });

  it('every chained event of a subscribed org reaches the SIEM signed, with seq and hashes; retried ones dedupe by seq; the chain verifies offline', async () => {
    const hook = await t.app.inject({ method: 'POST', url: `/v1/orgs/${owner.orgId}/webhooks`, headers: owner.auth, payload: { url: `${base}/siem`, events: ['audit.event_recorded'] } });
    expect(hook.statusCode, hook.body).toBe(201);
    for (const name of ['Streams 2', 'Streams 3']) {
      expect((await t.app.inject({ method: 'PATCH', url: `/v1/orgs/${owner.orgId}`, headers: owner.auth, payload: { name } })).statusCode).toBe(200);
    }
    await t.app.inject({ method: 'PATCH', url: `/v1/orgs/${quiet.orgId}`, headers: quiet.auth, payload: { name: 'still quiet' } });
    await t.events.startWorker();
    const chained = await waitFor(
      async () => (await t.app.inject({ url: `/v1/orgs/${owner.orgId}/audit-events?pending=exclude&limit=100`, headers: owner.auth })).json().data.length as number,
      (n) => n >= 6,
    );
    const bySeq = await waitFor(
      async () => {
        const m = new Map<number, Link>();
        for (const r of received.filter((x) => x.accepted)) {
          const ok = verifySignature(
            hook.json().secret,
            { id: String(r.headers['webhook-id']), timestamp: String(r.headers['webhook-timestamp']), signature: String(r.headers['webhook-signature']) },
            r.body,
          );
          if (!ok) throw new Error('bad signature');
          const { type, orgId, data } = JSON.parse(r.body);
          expect(type).toBe('audit.event_recorded');
          m.set(data.seq, { orgId, ...data, actorType: data.actor.type, actorId: data.actor.id, actorUserId: data.actor.userId, targetType: data.target.type, targetId: data.target.id });
        }
        return m;
      },
      (m) => m.size >= chained,
    );
    await t.events.stopWorker();
    // the two refused attempts were sent again (same Webhook-Id), and the receiver has every seq
    const refused = received.filter((r) => !r.accepted).map((r) => r.headers['webhook-id']);
    expect(refused).toHaveLength(2);
    expect(received.filter((r) => r.accepted).map((r) => r.headers['webhook-id'])).toEqual(expect.arrayContaining(refused));
    const links = [...bySeq.values()].sort((a, b) => a.seq - b.seq);
    expect(links.map((l) => l.seq)).toEqual(links.map((_, i) => i + 1));
    expect(links.every((l) => l.orgId === owner.orgId)).toBe(true);
    expect(links.map((l) => l.action)).toContain('org.updated');
    expect(verifyOffline(links, '0'.repeat(64))).toEqual([]);
    // an org without a subscribed endpoint streams nothing (no outbox events for its chain)
    const streamed = await t.db.owner.selectFrom('outbox').select(['tenant_id']).where('name', '=', 'audit.event_recorded').execute();
    expect(streamed.filter((r) => r.tenant_id === quiet.orgId)).toEqual([]);
    expect(streamed.filter((r) => r.tenant_id === owner.orgId).length).toBe(links.length);
    // tampering is visible to the customer: an edited change breaks the hash
    expect(verifyOffline([{ ...links[0]!, changes: { forged: true } }, ...links.slice(1)], '0'.repeat(64))).toEqual(['seq 1: hash mismatch']);
  });

  it('NDJSON export (reporting) carries the chain fields, resumes after a seq, and verifies offline from that point', async () => {
    const res = await t.app.inject({ method: 'POST', url: `/v1/orgs/${owner.orgId}/exports`, headers: owner.auth, payload: { resource: 'audit-events', format: 'ndjson', filters: { afterSeq: 2 } } });
    expect(res.statusCode, res.body).toBe(202);
    await t.events.startWorker();
    const done = await waitFor(async () => (await t.app.inject({ url: `/v1/orgs/${owner.orgId}/exports/${res.json().id}`, headers: owner.auth })).json(), (e) => e.status === 'succeeded');
    await t.events.stopWorker();
    const file = await t.app.inject({ url: done.download.url.replace(/^https?:\/\/[^/]+/, '') });
    const rows = file.body.trim().split('\n').map((l) => JSON.parse(l));
    expect(Object.keys(rows[0]).sort()).toEqual(['action', 'actor_id', 'actor_type', 'actor_user_id', 'changes', 'hash', 'id', 'ip', 'occurred_at', 'pd_ref', 'prev_hash', 'request_id', 'seq', 'target_id', 'target_type'].sort());
    const links: Link[] = rows
      .map((r) => ({ orgId: owner.orgId, seq: r.seq, id: r.id, occurredAt: r.occurred_at, actorType: r.actor_type, actorId: r.actor_id, actorUserId: r.actor_user_id, action: r.action, targetType: r.target_type, targetId: r.target_id, requestId: r.request_id, ip: r.ip, changes: JSON.parse(r.changes), pdRef: r.pd_ref, prevHash: r.prev_hash, hash: r.hash }))
      .sort((a, b) => a.seq - b.seq);
    expect(links[0]!.seq).toBe(3);
    expect(links.every((l) => l.seq > 2)).toBe(true);
    // resuming: the first exported event links to the last one the SIEM had (seq 2)
    const seq2 = (await t.app.inject({ url: `/v1/orgs/${owner.orgId}/audit-events?pending=exclude&limit=100`, headers: owner.auth })).json().data.find((e: any) => e.seq === 2);
    expect(verifyOffline(links, seq2.hash)).toEqual([]);
    const bad = await t.app.inject({ method: 'POST', url: `/v1/orgs/${owner.orgId}/exports`, headers: owner.auth, payload: { resource: 'audit-events', format: 'ndjson', filters: { afterSeq: -1 } } });
    expect(bad.statusCode).toBe(400);
  });
  it("which orgs stream, asked for many in one call: each lookup under its org's RLS context, the caller's context put back", async () => {
    const ask = (ids: string[]) => t.modules.notifications.subscribedAmong(ids, 'audit.event_recorded');
    expect(await ask([owner.orgId, quiet.orgId])).toEqual(new Set([owner.orgId]));
    expect(await ask([quiet.orgId])).toEqual(new Set());
    // Inside another org's tenant transaction (as the app role): the function ends with that org's context again.
    const after = await t.db.withTenant(quiet.orgId, async (trx) => {
      const { rows } = await sql<{ org: string }>`select webhook_orgs_subscribed(${[owner.orgId, quiet.orgId]}::uuid[], 'audit.event_recorded') as org`.execute(trx);
      expect(rows.map((r) => r.org)).toEqual([owner.orgId]);
      return (await sql<{ v: string }>`select current_setting('app.tenant_id', true) as v`.execute(trx)).rows[0]!.v;
    });
    expect(after).toBe(quiet.orgId);
  });
});
