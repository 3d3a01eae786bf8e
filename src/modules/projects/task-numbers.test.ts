import { spawn } from 'node:child_process';
import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestPlatform, type TestPlatform } from '../../../test/helpers/test-platform.ts';
import type { TenantActorContext } from '../../platform/http/actor.ts';
import { newId } from '../../platform/ids.ts';
import type { EventPublisher } from '../../platform/outbox/publisher.ts';
import { usingPostgres } from '../../platform/testing/test-db.ts';
import { createAudit, type Audit } from '../audit/index.ts';
import { allowEverything, createProjects, type ProjectsDeps } from './index.ts';

/**
 * Task numbers under real concurrency: only Postgres has concurrent transactions (PGlite runs one at a
 * time), so these run with TEST_DATABASE_URL only. Gap-free and unique, with creates that roll back after
 * taking their number and a holder killed with SIGKILL; and the project row is locked only at the end of
 * the create (a create paused before its number blocks nobody).
 */
describe.skipIf(!usingPostgres)('task numbers on Postgres: late allocation, gap-free under rollbacks and kill -9', () => {
  let t: TestPlatform;
  const orgId = newId();
  const userId = newId();
  const ctx: TenantActorContext = { tenantId: orgId, actor: { type: 'user', id: userId, userId }, requestId: 'numbers-test', ip: null };

  beforeAll(async () => {
    t = await createTestPlatform();
  }, 60_000);
  afterAll(async () => t?.close());

  const deps = (over: Partial<ProjectsDeps> = {}): ProjectsDeps => ({
    db: t.db, events: t.events, audit: createAudit({ db: t.db }), cache: t.cache, isMember: async () => true, entitlements: allowEverything, ...over,
  });

  async function numbersIn(projectId: string): Promise<{ numbers: number[]; counter: number }> {
    return t.db.withTenant(orgId, async (trx) => {
      const rows = await trx.selectFrom('tasks').select('number').where('project_id', '=', projectId).orderBy('number').execute();
      const p = await trx.selectFrom('projects').select('task_counter').where('id', '=', projectId).executeTakeFirstOrThrow();
      return { numbers: rows.map((r) => Number(r.number)), counter: Number(p.task_counter) };
    });
  }
  const oneTo = (n: number) => Array.from({ length: n }, (_, i) => i + 1);

  it('a create paused before its number holds no numbering lock: other creates on the same project go through', async () => {
    const plain = createProjects(deps());
    const project = await plain.createProject(ctx, { key: 'LATE', name: 'Late lock' });
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    let paused!: () => void;
    const reached = new Promise<void>((r) => (paused = r));
    const real = createAudit({ db: t.db });
    // The audit record is the write before the number: pausing there leaves the transaction open.
    const gated: Audit = {
      ...real,
      async record(trx, event) {
        if (event.action === 'projects.task.create' && event.changes?.title && (event.changes.title as { to: string }).to === 'paused') {
          paused();
          await gate;
        }
        return real.record(trx, event);
      },
    };
    const slow = createProjects(deps({ audit: gated })).createTask(ctx, project.id, { title: 'paused' });
    await reached;
    const within = <T>(p: Promise<T>) => Promise.race([p, new Promise<never>((_, no) => setTimeout(() => no(new Error('blocked by the paused create')), 5_000))]);
    const fast = await within(Promise.all([1, 2, 3].map((i) => plain.createTask(ctx, project.id, { title: `not blocked ${i}` }))));
    // An update of the project meanwhile may wait for the paused create's pin (FOR KEY SHARE, while the
    // audit log locks per org), never forever: it goes through once that create commits.
    const rename = plain.updateProject(ctx, project.id, { name: 'Renamed' });
    release();
    const late = await slow;
    expect((await rename).version).toBe(2);
    expect(fast.map((x) => x.number).sort()).toEqual([1, 2, 3]);
    expect(late).toMatchObject({ number: 4, key: 'LATE-4', title: 'paused' });
    expect(await numbersIn(project.id)).toEqual({ numbers: [1, 2, 3, 4], counter: 4 });
  });

  it('60 concurrent creates, every third rolled back after taking its number: the committed ones are 1..N', async () => {
    const plain = createProjects(deps());
    const project = await plain.createProject(ctx, { key: 'RACE', name: 'Race with rollbacks' });
    // Fails in the statement after the number was allocated (the task_created event), so the whole
    // transaction rolls back with its number and its row lock.
    const failing: EventPublisher = {
      async add(trx, event) {
        if (event.name === 'projects.task_created' && (event.payload as { title: string }).title.endsWith('!')) throw new Error('injected failure after numbering');
        return t.events.add(trx, event);
      },
    };
    const service = createProjects(deps({ events: failing }));
    const results = await Promise.allSettled(
      Array.from({ length: 60 }, (_, i) => service.createTask(ctx, project.id, { title: `task ${i}${i % 3 === 0 ? '!' : ''}` })),
    );
    const ok = results.flatMap((r) => (r.status === 'fulfilled' ? [r.value] : []));
    const failed = results.filter((r) => r.status === 'rejected');
    expect(failed).toHaveLength(20);
    for (const f of failed) expect((f as PromiseRejectedResult).reason.message).toBe('injected failure after numbering');
    expect(ok.map((x) => x.number).sort((a, b) => a - b)).toEqual(oneTo(40));
    expect(new Set(ok.map((x) => x.key)).size).toBe(40);
    expect(await numbersIn(project.id)).toEqual({ numbers: oneTo(40), counter: 40 });
    // and the sequence continues without a gap
    expect((await plain.createTask(ctx, project.id, { title: 'after' })).number).toBe(41);
  });

  it('creates racing updates of their project never deadlock (lock order: project, then the audit log)', async () => {
    const plain = createProjects(deps());
    const project = await plain.createProject(ctx, { key: 'ORDER', name: 'Lock order' });
    const work = Array.from({ length: 40 }, (_, i) =>
      i % 4 === 0 ? plain.updateProject(ctx, project.id, { description: `edit ${i}` }) : plain.createTask(ctx, project.id, { title: `task ${i}` }),
    );
    const results = await Promise.allSettled(work);
    const failures = results.flatMap((r) => (r.status === 'rejected' ? [String(r.reason?.message ?? r.reason)] : []));
    expect(failures).toEqual([]);
    expect(await numbersIn(project.id)).toEqual({ numbers: oneTo(30), counter: 30 });
  });

  it('a process killed (SIGKILL) while holding the number gives it back; the create waiting on it takes it', async () => {
    const plain = createProjects(deps());
    const project = await plain.createProject(ctx, { key: 'KILL', name: 'Killed holder' });
    await plain.createTask(ctx, project.id, { title: 'first' });
    // Another process takes the next number exactly as a create does (UPDATE … RETURNING in an open
    // transaction) and then hangs before COMMIT.
    const script = `
      const pg = require('pg');
      const c = new pg.Client({ connectionString: process.env.DB_URL });
      (async () => {
        await c.connect();
        await c.query('begin');
        await c.query("select set_config('app.tenant_id', $1, true)", [process.env.ORG]);
        const r = await c.query('update projects set task_counter = task_counter + 1 where id = $1 returning task_counter', [process.env.PROJECT]);
        console.log('holding ' + r.rows[0].task_counter);
        setInterval(() => {}, 1000);
      })();`;
    const child = spawn(process.execPath, ['-e', script], {
      env: { ...process.env, DB_URL: t.testDb.url!, ORG: orgId, PROJECT: project.id },
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    const exited = new Promise((r) => child.on('exit', r));
    try {
      const held = await new Promise<string>((resolve, reject) => {
        child.stdout!.on('data', (b: Buffer) => resolve(b.toString().trim()));
        child.on('exit', () => reject(new Error('holder exited early')));
        setTimeout(() => reject(new Error('holder did not take the number')), 10_000);
      });
      expect(held).toBe('holding 2');
      let settled = false;
      const waiting = plain.createTask(ctx, project.id, { title: 'waits for the holder' }).finally(() => (settled = true));
      await new Promise((r) => setTimeout(r, 300));
      expect(settled).toBe(false);
      child.kill('SIGKILL');
      await exited;
      const task = await waiting;
      expect(task.number).toBe(2);
    } finally {
      child.kill('SIGKILL');
    }
    expect(await numbersIn(project.id)).toEqual({ numbers: [1, 2], counter: 2 });
    // nothing left open by the killed session: its row lock is gone
    await t.db.withTenant(orgId, (trx) => sql`select 1 from projects where id = ${project.id} for update nowait`.execute(trx));
  });
});
