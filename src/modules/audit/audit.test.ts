import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { addMember, signup, type SignedUp } from '../../../test/helpers/auth.ts';
import { createTestPlatform, type TestPlatform } from '../../../test/helpers/test-platform.ts';
import { systemActor } from '../../platform/http/actor.ts';
import { openDatabase } from '../../platform/db/database.ts';
import { newId } from '../../platform/ids.ts';
import { usingPostgres } from '../../platform/testing/test-db.ts';
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
    // Committed but not sequenced yet: listed (pending first), with no place in the chain.
    const pending = (await events()).json().data;
    expect(pending[0]).toMatchObject({ action: 'org.updated', seq: null, prevHash: null, hash: null });
    expect((await events('?pending=exclude')).json().data.map((e: any) => e.action)).not.toContain('org.updated');
    expect((await t.modules.audit.sequence()).sequenced).toBeGreaterThanOrEqual(7);
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
    expect(seqs).toEqual([7, 6, 5, 4, 3, 2, 1]);
    expect((await events('?pending=exclude')).json().data).toEqual(list.json().data);
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

    // A mix: two pending events on top of the sequenced ones; pages walk through both.
    for (const name of ['Mix 1', 'Mix 2']) {
      expect((await t.app.inject({ method: 'PATCH', url: `/v1/orgs/${owner.orgId}`, headers: owner.auth, payload: { name } })).statusCode).toBe(200);
    }
    const all = (await events()).json().data.map((e: any) => e.id);
    expect((await events()).json().data.slice(0, 3).map((e: any) => e.seq === null)).toEqual([true, true, false]);
    const paged: string[] = [];
    let cursor: string | null = null;
    do {
      const page: any = (await events(`?limit=2${cursor ? `&cursor=${cursor}` : ''}`)).json();
      expect(page.data.length).toBeLessThanOrEqual(2);
      paged.push(...page.data.map((e: any) => e.id));
      cursor = page.nextCursor;
    } while (cursor);
    expect(paged).toEqual(all);
    // Without pending events the cursor is a different list's.
    const seqOnly = (await events('?pending=exclude&limit=2')).json();
    expect(seqOnly.data.every((e: any) => e.seq !== null)).toBe(true);
    expect((await events(`?limit=2&cursor=${seqOnly.nextCursor}`)).statusCode).toBe(400);
    await t.modules.audit.sequence(owner.orgId);

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
    expect((await events('?pending=only')).statusCode).toBe(400);
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

  it('verify passes on untouched chains, including the platform chain, and reports the backlog', async () => {
    const lines: string[] = [];
    expect((await t.app.inject({ method: 'POST', url: '/v1/auth/login', payload: { email: owner.email, password: owner.password } })).statusCode).toBe(200);
    // The login is pending: reported as backlog, not checked, not a problem.
    const before = await runAuditCommand(t.modules.audit, ['verify', PLATFORM_AUDIT_TENANT], (l) => lines.push(l));
    expect(before).toBe(0);
    expect(lines[0]).toMatch(/^ok .* pending=[1-9]\d* oldest=\d+\.\ds$/);
    expect(lines.at(-1)).toMatch(/[1-9]\d* pending event\(s\) not yet sequenced/);
    lines.length = 0;
    expect(await runAuditCommand(t.modules.audit, ['sequence'], (l) => lines.push(l))).toBe(0);
    expect(lines[0]).toMatch(/^[1-9]\d* event\(s\) sequenced in [1-9]\d* chain\(s\)$/);
    lines.length = 0;
    const reports = await audit().verify();
    expect(reports.length).toBeGreaterThanOrEqual(3);
    expect(reports.every((r) => r.ok)).toBe(true);
    expect(reports.map((r) => r.orgId)).toContain(PLATFORM_AUDIT_TENANT);
    expect(reports.every((r) => r.backlog.pending === 0 && r.events > 0)).toBe(true);
    expect(await runAuditCommand(t.modules.audit, ['verify', owner.orgId], (l) => lines.push(l))).toBe(0);
    expect(lines[0]).toMatch(/^ok .* pending=0$/);
    expect(await runAuditCommand(t.modules.audit, ['verify', 'nope'], () => {})).toBe(2);
    expect(await runAuditCommand(t.modules.audit, ['sequence', 'x', 'y'], () => {})).toBe(2);
  });

  it('verify detects an edited row, a deleted middle row and a deleted newest row (tampered as the owner role)', async () => {
    const signupSequenced = async () => {
      const org = await signup(t.app);
      await t.modules.audit.sequence(org.orgId);
      return org;
    };
    const edited = await signupSequenced();
    await tamper(edited.orgId, (trx) => trx.updateTable('audit_events').set({ changes: JSON.stringify({ name: { to: 'Innocent' } }) }).where('action', '=', 'org.created'));
    const [r1] = await audit().verify(edited.orgId);
    expect(r1!.ok).toBe(false);
    expect(r1!.problems.join('\n')).toMatch(/edited/);

    const middle = await signupSequenced();
    await tamper(middle.orgId, (trx) => trx.deleteFrom('audit_events').where('seq', '=', 2));
    const [r2] = await audit().verify(middle.orgId);
    expect(r2!.ok).toBe(false);
    expect(r2!.problems.join('\n')).toMatch(/missing|prev_hash/);

    const tail = await signupSequenced();
    await tamper(tail.orgId, (trx) => trx.deleteFrom('audit_events').where('seq', '=', 3));
    const [r3] = await audit().verify(tail.orgId);
    expect(r3!.ok).toBe(false);
    expect(r3!.problems.join('\n')).toMatch(/deleted/);

    // Recomputing a hash after editing does not help: the next link breaks.
    const rehashed = await signupSequenced();
    await tamper(rehashed.orgId, (trx) => trx.updateTable('audit_events').set({ hash: 'f'.repeat(64) }).where('seq', '=', 1));
    expect((await audit().verify(rehashed.orgId))[0]!.ok).toBe(false);

    const lines: string[] = [];
    expect(await runAuditCommand(t.modules.audit, ['verify'], (l) => lines.push(l))).toBe(1);
    expect(lines.filter((l) => l.startsWith('TAMPERED')), lines.join('\n')).toHaveLength(4);
    expect(lines.some((l) => l.includes(owner.orgId) && l.startsWith('ok'))).toBe(true);
  });

  it('the worker schedule sequences within its tick and the backlog drains', async () => {
    const org = await signup(t.app);
    expect((await t.modules.audit.backlog()).pending).toBeGreaterThanOrEqual(3);
    // First tick creates the schedule's row; make it due, as a second later, and tick again.
    await t.events.runDueSchedules();
    await sql`update job_schedules set next_run_at = now() where name = 'audit.sequence'`.execute(t.db.owner);
    expect(await t.events.runDueSchedules()).toContain('audit.sequence');
    expect((await audit().verify(org.orgId))[0]).toMatchObject({ ok: true, events: 3, backlog: { pending: 0 } });
    expect(await t.modules.audit.backlog()).toEqual({ pending: 0, oldestAgeSeconds: 0 });
  });

  const burstEvent = (orgId: string, targetId: string) => ({ orgId, action: 'test.burst', target: { type: 'thing', id: targetId }, context: systemActor('test') });
  const sequencedTargets = async (orgId: string) =>
    t.db.owner.transaction().execute(async (trx) => {
      await sql`select set_config('app.tenant_id', ${orgId}, true)`.execute(trx);
      const { rows } = await sql<{ target_id: string; seq: number | null; pos: number | null }>`
        select target_id, seq, pos from audit_events where tenant_id = ${orgId} and action = 'test.burst' order by seq`.execute(trx);
      return rows;
    });

  it('one pass sequences hundreds of chains in groups: new and existing heads, a backlog longer than one round, two passes at once never fork a chain', async () => {
    await t.modules.audit.sequence(); // whatever earlier tests left pending
    const orgs = Array.from({ length: 450 }, () => newId());
    const want = new Map<string, number>();
    const write = async (orgId: string, n: number) => {
      await t.db.withTenant(orgId, async (trx) => {
        for (let i = 0; i < n; i++) await t.modules.audit.record(trx, burstEvent(orgId, `many-${i}`));
      });
      want.set(orgId, (want.get(orgId) ?? 0) + n);
    };
    // Five chains with a head already, then more for them; one with more than a round (SEQUENCE_BATCH = 500) takes.
    for (const org of orgs.slice(0, 5)) await write(org, 2);
    await t.modules.audit.sequence();
    for (const org of orgs) await write(org, org === orgs[7] ? 520 : 2);
    const second = usingPostgres ? await openDatabase({ databaseUrl: t.testDb.url! }) : t.db;
    try {
      const passes = await Promise.all([t.modules.audit.sequence(), createAudit({ db: second }).sequence()]);
      const rest = await t.modules.audit.sequence();
      const total = [...want.values()].reduce((a, b) => a + b, 0);
      // The five earlier heads' first 10 events were sequenced by the pass before.
      expect(passes[0].sequenced + passes[1].sequenced + rest.sequenced).toBe(total - 10);
      const reports = new Map((await audit().verify()).map((r) => [r.orgId, r]));
      for (const org of orgs) expect(reports.get(org), org).toMatchObject({ ok: true, events: want.get(org), problems: [], backlog: { pending: 0 } });
    } finally {
      if (second !== t.db) await second.close();
    }
  });

  it('the grouped write refuses a link to an event that is not pending (already chained or of another chain): the call rolls back whole', async () => {
    const org = newId();
    await t.db.withTenant(org, (trx) => t.modules.audit.record(trx, burstEvent(org, 'link-1')));
    await t.modules.audit.sequence(org);
    const head = async () => (await sql<{ last_seq: string; last_hash: string }>`select last_seq, last_hash from audit_chains where tenant_id = ${org}`.execute(t.db.owner)).rows[0]!;
    const before = await head();
    const chained = (await sequencedTargets(org))[0]!;
    const { rows } = await t.db.owner.transaction().execute(async (trx) => {
      await sql`select set_config('app.tenant_id', ${org}, true)`.execute(trx);
      return sql<{ id: string }>`select id from audit_events where tenant_id = ${org} and seq = ${chained.seq}`.execute(trx);
    });
    const links = JSON.stringify([{ t: org, last_seq: 99, last_hash: 'x'.repeat(64), rows: [{ id: rows[0]!.id, seq: 99, prev_hash: 'y', hash: 'x'.repeat(64) }] }]);
    await expect(t.db.owner.transaction().execute((trx) => sql`select audit_sequencer_link(${links}::jsonb)`.execute(trx))).rejects.toThrow(/changed under its lock/);
    expect(await head()).toEqual(before);
    expect((await audit().verify(org))[0]).toMatchObject({ ok: true, events: 1 });
  });

  it('a burst of 50 concurrent writes (some rolled back) with two sequencers running gives one gap-free chain of exactly the committed events', async () => {
    await t.modules.audit.sequence(); // whatever earlier tests left pending, so the counts below are this org's
    const org = await signup(t.app);
    // A second worker: on Postgres its own pool, as another process would have.
    const second = usingPostgres ? await openDatabase({ databaseUrl: t.testDb.url! }) : t.db;
    const workers = [t.modules.audit, createAudit({ db: second })];
    try {
      let running = true;
      const sequencers = workers.map(async (w, i) => {
        let n = 0;
        while (running) {
          n += (await (i === 0 ? w.sequence() : w.sequence(org.orgId))).sequenced;
          await new Promise((r) => setTimeout(r, 1));
        }
        return n;
      });
      const outcomes = await Promise.all(
        Array.from({ length: 50 }, async (_, i) => {
          const targetId = `burst-${i}`;
          const rollBack = i % 7 === 3;
          try {
            await t.db.withTenant(org.orgId, async (trx) => {
              await t.modules.audit.record(trx, burstEvent(org.orgId, targetId));
              if (rollBack) throw new Error('rolled back on purpose');
            });
            return { targetId, committed: true };
          } catch (err) {
            if (!rollBack) throw err;
            return { targetId, committed: false };
          }
        }),
      );
      running = false;
      const byWorkers = (await Promise.all(sequencers)).reduce((a, b) => a + b, 0);
      const last = await t.modules.audit.sequence(org.orgId);
      const committed = outcomes.filter((o) => o.committed).map((o) => o.targetId);
      expect(committed).toHaveLength(43);

      // Every event sequenced exactly once (3 from the signup), none twice: the counts add up.
      expect(byWorkers + last.sequenced).toBe(3 + committed.length);
      const [report] = await audit().verify(org.orgId);
      expect(report).toMatchObject({ ok: true, events: 3 + committed.length, problems: [], backlog: { pending: 0 } });
      const rows = await sequencedTargets(org.orgId);
      expect(rows.map((r) => r.target_id).sort()).toEqual([...committed].sort());
      expect(rows.every((r) => r.seq !== null)).toBe(true);
      expect(rows.map((r) => Number(r.seq))).toEqual([...new Set(rows.map((r) => Number(r.seq)))]);
    } finally {
      if (second !== t.db) await second.close();
    }
  });

  const within = <T>(p: Promise<T>, ms: number, what: string): Promise<T> =>
    Promise.race([p, new Promise<never>((_, reject) => setTimeout(() => reject(new Error(`${what}: still waiting after ${ms} ms`)), ms).unref())]);

  /** A transaction of `orgId` that has appended one audit event and stays open until released. */
  const holdOpen = async (orgId: string, targetId: string) => {
    let release!: () => void;
    const gate = new Promise<void>((resolve) => (release = resolve));
    let appended!: () => void;
    const inserted = new Promise<void>((resolve) => (appended = resolve));
    const done = t.db.withTenant(orgId, async (trx) => {
      await t.modules.audit.record(trx, burstEvent(orgId, targetId));
      appended();
      await gate;
    });
    await within(inserted, 5_000, 'the held transaction');
    return { release, done };
  };

  it.skipIf(!usingPostgres)('a record whose transaction commits last is never skipped: it is chained after the ones committed before it (Postgres)', async () => {
    const org = await signup(t.app);
    await t.modules.audit.sequence(org.orgId);
    const long = await holdOpen(org.orgId, 'long');
    try {
      await within(
        Promise.all(Array.from({ length: 20 }, (_, i) => t.db.withTenant(org.orgId, (trx) => t.modules.audit.record(trx, burstEvent(org.orgId, `short-${i}`))))),
        10_000,
        'writes beside an open audited transaction',
      );
      // The long transaction's record is older (lower pos) but not committed: the sequencer neither waits
      // for it nor skips past it for good.
      expect((await t.modules.audit.sequence(org.orgId)).sequenced).toBe(20);
      expect((await audit().verify(org.orgId))[0]).toMatchObject({ ok: true, events: 23, backlog: { pending: 0 } });
    } finally {
      long.release();
      await long.done;
    }
    expect((await t.modules.audit.sequence()).sequenced).toBeGreaterThanOrEqual(1);
    const rows = await sequencedTargets(org.orgId);
    const longRow = rows.find((r) => r.target_id === 'long')!;
    expect(Number(longRow.seq)).toBe(24);
    expect(rows.every((r) => r.target_id === 'long' || Number(r.pos) > Number(longRow.pos))).toBe(true);
    expect((await audit().verify(org.orgId))[0]).toMatchObject({ ok: true, events: 24, problems: [] });
    const newest = (await events('?pending=exclude&limit=1', org, org.orgId)).json().data[0];
    expect(newest).toMatchObject({ seq: 24, target: { id: 'long' } });
  });

  it.skipIf(!usingPostgres)('audited writes of one org do not wait for each other: no chain head lock on the write path, task create included (Postgres)', async () => {
    const org = await signup(t.app);
    const project = await t.app.inject({ method: 'POST', url: `/v1/orgs/${org.orgId}/projects`, headers: org.auth, payload: { key: 'LCK', name: 'Locks' } });
    expect(project.statusCode, project.body).toBe(201);
    await t.modules.audit.sequence(org.orgId);
    const held = await holdOpen(org.orgId, 'held');
    try {
      // A second connection appends and commits while the first transaction is still open (lock_timeout
      // turns any wait on a lock into an error instead of a hang).
      await within(
        t.db.withTenant(org.orgId, async (trx) => {
          await sql`set local lock_timeout = '1s'`.execute(trx);
          await t.modules.audit.record(trx, burstEvent(org.orgId, 'beside'));
        }),
        5_000,
        'a second audited transaction',
      );
      // The head is free (only the sequencer takes it), and the sequencer runs meanwhile.
      await t.db.owner.transaction().execute(async (trx) => {
        await sql`select set_config('app.tenant_id', ${org.orgId}, true)`.execute(trx);
        await sql`set local lock_timeout = '1s'`.execute(trx);
        await sql`select 1 from audit_chains where tenant_id = ${org.orgId} for update nowait`.execute(trx);
      });
      expect((await within(t.modules.audit.sequence(org.orgId), 5_000, 'the sequencer')).sequenced).toBe(1);
      // The create-task path (idempotency, outbox, audit) commits beside the open audited transaction.
      const task = await within(
        t.app.inject({ method: 'POST', url: `/v1/orgs/${org.orgId}/projects/${project.json().id}/tasks`, headers: org.auth, payload: { title: 'Not blocked' } }),
        5_000,
        'create task',
      );
      expect(task.statusCode, task.body).toBe(201);
    } finally {
      held.release();
      await held.done;
    }
    await t.modules.audit.sequence(org.orgId);
    expect((await audit().verify(org.orgId))[0]).toMatchObject({ ok: true, backlog: { pending: 0 } });
  });

  it('list queries are backed by indexes (EXPLAIN with sequential scans disabled)', async () => {
    const plan = (query: string) =>
      t.db.withTenant(owner.orgId, async (trx) => {
        await sql`set local enable_seqscan = off`.execute(trx);
        const { rows } = await sql.raw<Record<string, string>>(`explain ${query}`).execute(trx);
        return rows.map((r) => Object.values(r)[0]).join('\n');
      });
    // Fresh statistics, so the plans do not depend on whether autovacuum has analyzed the table yet.
    await sql`analyze audit_events`.execute(t.db.owner);
    const base = `select * from audit_events where tenant_id = '${owner.orgId}'`;
    expect(await plan(`${base} and action = 'x' order by seq desc limit 51`)).toMatch(/audit_events_action_idx/);
    expect(await plan(`${base} and actor_id = 'x' order by seq desc limit 51`)).toMatch(/audit_events_actor_idx/);
    expect(await plan(`${base} and target_type = 'user' and target_id = 'x' order by seq desc limit 51`)).toMatch(/audit_events_target_idx/);
    expect(await plan(`${base} and seq < 10 order by seq desc limit 51`)).toMatch(/Index/);
    expect(await plan(`${base} and seq is null order by pos desc limit 51`)).toMatch(/audit_events_pending_idx/);
    expect(await plan(`${base} and seq is null order by pos asc limit 500`)).toMatch(/audit_events_pending_idx/);
    expect(await plan(`select distinct tenant_id from audit_events where seq is null`)).toMatch(/audit_events_pending_idx/);
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
