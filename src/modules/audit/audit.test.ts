import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { addMember, signup, type SignedUp } from '../../../test/helpers/auth.ts';
import { createTestPlatform, type TestPlatform } from '../../../test/helpers/test-platform.ts';
import { systemActor } from '../../platform/http/actor.ts';
import { newId } from '../../platform/ids.ts';
import { createAudit, PLATFORM_AUDIT_TENANT, runAuditCommand } from './index.ts';

const mode = `${process.env.TEST_DATABASE_URL ? 'postgres' : 'pglite'}${process.env.TEST_REDIS_URL ? '+redis' : ''}`;

describe(`audit log (${mode})`, () => {
  let t: TestPlatform;
  let owner: SignedUp;
  let viewer: SignedUp;
  const audit = () => createAudit({ db: t.db });

  beforeAll(async () => {
    t = await createTestPlatform();
    owner = await signup(t.app, { organizationName: 'Audited' });
    viewer = await signup(t.app);
    await addMember(t.app, owner, owner.orgId, viewer, 'viewer');
  });
  afterAll(async () => t?.close());

  const events = (query = '', who = owner, org = owner.orgId) =>
    t.app.inject({ url: `/v1/orgs/${org}/audit-events${query}`, headers: who.auth });

  /**
   * Tampers as the owner role inside the org's tenant context (tenant tables FORCE RLS, which binds a
   * non-superuser owner). The test owner is also a superuser on both PGlite and Postgres, which bypasses
   * RLS, so every statement also names the tenant explicitly.
   */
  const tamper = (orgId: string, fn: (table: any) => any) =>
    t.db.owner.transaction().execute(async (trx) => {
      await sql`select set_config('app.tenant_id', ${orgId}, true)`.execute(trx);
      await fn(trx).where('tenant_id', '=', orgId).execute();
    });

  it('records every mutation with actor, target, request id, IP and changed fields, newest first', async () => {
    const res = await t.app.inject({ method: 'PATCH', url: `/v1/orgs/${owner.orgId}`, headers: { ...owner.auth, 'x-request-id': 'req-rename-1' }, payload: { name: 'Audited 2' } });
    expect(res.statusCode).toBe(200);
    const list = await events();
    expect(list.statusCode).toBe(200);
    const [latest] = list.json().data;
    expect(latest).toMatchObject({
      action: 'org.updated',
      actor: { type: 'user', id: owner.userId, userId: owner.userId },
      target: { type: 'organization', id: owner.orgId },
      requestId: 'req-rename-1',
      ip: '127.0.0.1',
      changes: { name: { from: 'Audited', to: 'Audited 2' } },
    });
    const actions = list.json().data.map((e: any) => e.action);
    expect(actions).toEqual(['org.updated', 'member.added', 'invitation.accepted', 'invitation.created', 'member.added', 'org.created', 'user.signed_up']);
    const seqs = list.json().data.map((e: any) => e.seq);
    expect(seqs).toEqual([...seqs].sort((a: number, b: number) => b - a));
    // Each event links to the previous one.
    const data = list.json().data;
    for (let i = 0; i < data.length - 1; i++) expect(data[i].prevHash).toBe(data[i + 1].hash);
  });

  it('a failed mutation records nothing (same transaction)', async () => {
    const before = (await events()).json().data.length;
    const res = await t.app.inject({ method: 'PATCH', url: `/v1/orgs/${owner.orgId}/members/${owner.userId}`, headers: owner.auth, payload: { role: 'viewer' } });
    expect(res.statusCode).toBe(409);
    expect((await events()).json().data.length).toBe(before);
  });

  it('filters by action, actor, target and time, and pages with an opaque cursor', async () => {
    expect((await events('?action=member.added')).json().data).toHaveLength(2);
    expect((await events(`?actorId=${viewer.userId}`)).json().data.map((e: any) => e.action)).toEqual(['member.added', 'invitation.accepted']);
    expect((await events(`?targetType=user&targetId=${viewer.userId}`)).json().data).toHaveLength(1);
    expect((await events(`?from=${encodeURIComponent(new Date(Date.now() + 60_000).toISOString())}`)).json().data).toHaveLength(0);
    expect((await events(`?to=${encodeURIComponent(new Date(Date.now() + 60_000).toISOString())}`)).json().data.length).toBeGreaterThan(0);

    const all = (await events()).json().data.map((e: any) => e.id);
    const paged: string[] = [];
    let cursor: string | null = null;
    do {
      const page: any = (await events(`?limit=2${cursor ? `&cursor=${cursor}` : ''}`)).json();
      expect(page.data.length).toBeLessThanOrEqual(2);
      paged.push(...page.data.map((e: any) => e.id));
      cursor = page.nextCursor;
    } while (cursor);
    expect(paged).toEqual(all);

    // The cursor belongs to its filters (platform cursor format, as in every other list).
    const filtered = (await events('?action=member.added&limit=1')).json();
    expect(filtered.nextCursor).toEqual(expect.any(String));
    expect((await events(`?action=member.added&limit=1&cursor=${filtered.nextCursor}`)).statusCode).toBe(200);
    const reused = await events(`?action=invitation.accepted&limit=1&cursor=${filtered.nextCursor}`);
    expect(reused.statusCode).toBe(400);
    expect(reused.json().code).toBe('HTTP.BAD_CURSOR');
  });

  it('validates the query and needs audit:read (viewer 403, other org 404)', async () => {
    expect((await events('?limit=101')).statusCode).toBe(400);
    expect((await events('?limit=0')).statusCode).toBe(400);
    expect((await events('?cursor=not-a-cursor')).statusCode).toBe(400);
    expect((await events('?from=yesterday')).statusCode).toBe(400);
    expect((await events('?unknown=1')).statusCode).toBe(400);
    const denied = await events('', viewer);
    expect(denied.statusCode).toBe(403);
    expect(denied.json().permission).toBe('audit:read');
    const outsider = await signup(t.app);
    expect((await events('', outsider)).statusCode).toBe(404);
  });

  it('the app role can only SELECT and INSERT audit events: UPDATE and DELETE are refused', async () => {
    await expect(t.db.withTenant(owner.orgId, (trx) => trx.updateTable('audit_events').set({ action: 'forged' }).execute())).rejects.toThrow(/permission denied/);
    await expect(t.db.withTenant(owner.orgId, (trx) => trx.deleteFrom('audit_events').execute())).rejects.toThrow(/permission denied/);
    await expect(t.db.withTenant(owner.orgId, (trx) => sql`truncate audit_events`.execute(trx))).rejects.toThrow(/permission denied|must be owner/);
  });

  it('verify passes on untouched chains, including the platform chain', async () => {
    expect((await t.app.inject({ method: 'POST', url: '/v1/auth/login', payload: { email: owner.email, password: owner.password } })).statusCode).toBe(200);
    const reports = await audit().verify();
    expect(reports.length).toBeGreaterThanOrEqual(3);
    expect(reports.every((r) => r.ok)).toBe(true);
    expect(reports.map((r) => r.orgId)).toContain(PLATFORM_AUDIT_TENANT);
    const lines: string[] = [];
    expect(await runAuditCommand(t.modules.audit, ['verify', owner.orgId], (l) => lines.push(l))).toBe(0);
    expect(lines[0]).toMatch(/^ok/);
    expect(await runAuditCommand(t.modules.audit, ['verify', 'nope'], () => {})).toBe(2);
  });

  it('verify detects an edited row, a deleted middle row and a deleted newest row (tampered as the owner role)', async () => {
    const edited = await signup(t.app);
    await tamper(edited.orgId, (trx) => trx.updateTable('audit_events').set({ changes: JSON.stringify({ name: { to: 'Innocent' } }) }).where('action', '=', 'org.created'));
    const [r1] = await audit().verify(edited.orgId);
    expect(r1!.ok).toBe(false);
    expect(r1!.problems.join('\n')).toMatch(/edited/);

    const middle = await signup(t.app);
    await tamper(middle.orgId, (trx) => trx.deleteFrom('audit_events').where('seq', '=', 2));
    const [r2] = await audit().verify(middle.orgId);
    expect(r2!.ok).toBe(false);
    expect(r2!.problems.join('\n')).toMatch(/missing|prev_hash/);

    const tail = await signup(t.app);
    await tamper(tail.orgId, (trx) => trx.deleteFrom('audit_events').where('seq', '=', 3));
    const [r3] = await audit().verify(tail.orgId);
    expect(r3!.ok).toBe(false);
    expect(r3!.problems.join('\n')).toMatch(/deleted/);

    // Recomputing a hash after editing does not help: the next link breaks.
    const rehashed = await signup(t.app);
    await tamper(rehashed.orgId, (trx) => trx.updateTable('audit_events').set({ hash: 'f'.repeat(64) }).where('seq', '=', 1));
    expect((await audit().verify(rehashed.orgId))[0]!.ok).toBe(false);

    const lines: string[] = [];
    expect(await runAuditCommand(t.modules.audit, ['verify'], (l) => lines.push(l))).toBe(1);
    expect(lines.filter((l) => l.startsWith('TAMPERED')), lines.join('\n')).toHaveLength(4);
    expect(lines.some((l) => l.includes(owner.orgId) && l.startsWith('ok'))).toBe(true);
  });

  it('appends stay a single chain under concurrency (serialized per org)', async () => {
    const org = await signup(t.app);
    await Promise.all(
      Array.from({ length: 10 }, (_, i) =>
        t.app.inject({ method: 'PATCH', url: `/v1/orgs/${org.orgId}`, headers: org.auth, payload: { name: `Name ${i}` } }),
      ),
    );
    const [report] = await audit().verify(org.orgId);
    expect(report).toMatchObject({ ok: true, events: 13 });
  });

  it('list queries are backed by indexes (EXPLAIN with sequential scans disabled)', async () => {
    const plan = (query: string) =>
      t.db.withTenant(owner.orgId, async (trx) => {
        await sql`set local enable_seqscan = off`.execute(trx);
        const { rows } = await sql.raw<Record<string, string>>(`explain ${query}`).execute(trx);
        return rows.map((r) => Object.values(r)[0]).join('\n');
      });
    const base = `select * from audit_events where tenant_id = '${owner.orgId}'`;
    expect(await plan(`${base} and action = 'x' order by seq desc limit 51`)).toMatch(/audit_events_action_idx/);
    expect(await plan(`${base} and actor_id = 'x' order by seq desc limit 51`)).toMatch(/audit_events_actor_idx/);
    expect(await plan(`${base} and target_type = 'user' and target_id = 'x' order by seq desc limit 51`)).toMatch(/audit_events_target_idx/);
    expect(await plan(`${base} and seq < 10 order by seq desc limit 51`)).toMatch(/Index/);
    expect(await plan(`select * from memberships where user_id = '${owner.userId}'`)).toMatch(/Index/);
    expect(await plan(`select * from sessions where token_hash = 'x'`)).toMatch(/sessions_token_hash_key/);
    expect(await plan(`select count(*) from login_attempts where scope = 'ip' and key = 'x' and attempted_at > now()`)).toMatch(/login_attempts_key_idx/);
  });

  it('records into the caller’s transaction and rolls back with it', async () => {
    const org = await signup(t.app);
    await expect(
      t.db.withTenant(org.orgId, async (trx) => {
        await audit().record(trx, { orgId: org.orgId, action: 'test.rolled_back', target: { type: 'thing', id: newId() }, context: systemActor('test') });
        throw new Error('boom');
      }),
    ).rejects.toThrow('boom');
    expect((await events('?action=test.rolled_back', org, org.orgId)).json().data).toHaveLength(0);
    expect((await audit().verify(org.orgId))[0]!.ok).toBe(true);
  });
});
