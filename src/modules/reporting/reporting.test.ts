import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { sql } from 'kysely';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { addMember, signup, type SignedUp } from '../../../test/helpers/auth.ts';
import { waitFor } from '../../../test/helpers/jobs.ts';
import { createTestPlatform, type TestPlatform } from '../../../test/helpers/test-platform.ts';
import type { DbScope } from '../../platform/db/database.ts';
import type { ObjectStorage } from '../../platform/storage/index.ts';
import { createMemoryMailer } from '../notifications/index.ts';
import { SOURCE_TABLE_NAMES, type SourceTables } from './export-sources.repo.ts';
import { createExportsRepo, type ExportCheckpoint, type ExportsRepo } from './exports.repo.ts';
import { createExportRunner, type ExportRunner, type ExportRunnerDeps } from './exports.runner.ts';
import { neutralizeCell, runReportsCommand } from './index.ts';

describe(`reporting: exports and reports (${process.env.TEST_DATABASE_URL ? 'postgres' : 'pglite'})`, () => {
  let t: TestPlatform;
  let owner: SignedUp;
  let viewer: SignedUp;
  let other: SignedUp;
  let projectId: string;
  let dir: string;
  const mailer = createMemoryMailer(pino({ level: 'silent' }));

  const api = async (who: SignedUp, method: string, url: string, payload?: object, headers: Record<string, string> = {}) =>
    t.app.inject({ method: method as 'GET', url, headers: { ...who.auth, ...headers }, ...(payload ? { payload } : {}) });
  const exportsUrl = (org: string) => `/v1/orgs/${org}/exports`;
  let runner: ExportRunner;
  const runExports = async () => {
    await runner.kick();
    await runner.drain();
  };
  /** A runner like the platform's, over the given sources/storage (tests that race-free drive claims). */
  const localRunner = (over: Partial<ExportRunnerDeps> = {}) =>
    createExportRunner({
      repo: createExportsRepo(t.db.scope('reporting_exports', 'reporting_export_jobs')),
      sources: t.db.scope(...SOURCE_TABLE_NAMES),
      storage: t.storage,
      events: t.events,
      logger: pino({ level: 'silent' }),
      config: t.config.reporting,
      getUserEmail: async () => null,
      ...over,
    });
  const download = async (url: string) => t.app.inject({ url: url.replace(/^https?:\/\/[^/]+/, '') });

  beforeAll(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'plinth-exports-'));
    t = await createTestPlatform({ env: { STORAGE_DIR: dir, EXPORT_BATCH_ROWS: '3' }, seams: { mailer } });
    owner = await signup(t.app, { organizationName: 'Reporting Org', name: 'Owner' });
    viewer = await signup(t.app);
    other = await signup(t.app, { organizationName: 'Other Org' });
    await addMember(t.app, owner, owner.orgId, viewer, 'viewer');
    projectId = (await api(owner, 'POST', `/v1/orgs/${owner.orgId}/projects`, { key: 'REP', name: 'Reporting' })).json().id;
    const titles = ['=HYPERLINK("http://evil")', '+1+2', '-3', '@SUM(A1)', 'plain, with "quotes"', ...Array.from({ length: 3 }, (_, i) => `task ${i}`)];
    for (const title of titles) {
      const res = await api(owner, 'POST', `/v1/orgs/${owner.orgId}/projects/${projectId}/tasks`, { title, dueDate: '2020-01-01' });
      expect(res.statusCode).toBe(201);
    }
    await t.events.startWorker();
    runner = t.modules.reporting.runner;
  });
  afterAll(async () => {
    await t?.modules.reporting.close();
    await t?.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('neutralizes spreadsheet formulas in text cells', () => {
    expect(['=1', '+1', '-1', '@x', '\tx', 'ok', ''].map(neutralizeCell)).toEqual(["'=1", "'+1", "'-1", "'@x", "'\tx", 'ok', '']);
  });

  it('POST → 202 (idempotent); the job streams batches to a CSV behind a signed link; export_ready + e-mail', async () => {
    const key = { 'idempotency-key': 'export-tasks-1' };
    const res = await api(owner, 'POST', exportsUrl(owner.orgId), { resource: 'tasks', format: 'csv' }, key);
    expect(res.statusCode).toBe(202);
    const created = res.json();
    expect(created).toMatchObject({ resource: 'tasks', format: 'csv', status: 'queued', rowsDone: 0, download: null });
    expect(res.headers.location).toBe(`${exportsUrl(owner.orgId)}/${created.id}`);
    const replay = await api(owner, 'POST', exportsUrl(owner.orgId), { resource: 'tasks', format: 'csv' }, key);
    expect(replay.headers['idempotent-replayed']).toBe('true');
    expect(replay.json().id).toBe(created.id);

    await runExports();
    const done = (await api(owner, 'GET', `${exportsUrl(owner.orgId)}/${created.id}`)).json();
    expect(done).toMatchObject({ status: 'succeeded', rowsDone: 8, rowsTotal: 8, progress: 100, error: null });
    expect(done.download.url).toMatch(/\/files\/exports\//);
    const file = await download(done.download.url);
    expect(file.statusCode).toBe(200);
    expect(file.headers['content-type']).toBe('text/csv');
    const lines = file.body.trim().split('\n');
    expect(lines[0]).toBe('id,key,project_id,number,title,status,priority,assignee_id,labels,due_date,created_at,updated_at');
    expect(lines).toHaveLength(9);
    expect(file.body).toContain(`"'=HYPERLINK(""http://evil"")"`);
    expect(file.body).toContain(",'+1+2,");
    expect(file.body).toContain(",'-3,");
    expect(file.body).toContain(",'@SUM(A1),");
    expect(file.body).toContain('"plain, with ""quotes"""');
    // A token-less tampered link is refused.
    expect((await download(done.download.url.replace(/sig=[^&]+/, 'sig=AAAA'))).statusCode).toBe(404);

    const ready = await t.db.owner.selectFrom('outbox').select(['name', 'payload']).where('name', '=', 'reporting.export_ready').execute();
    expect(ready.map((r) => (r.payload as { exportId: string }).exportId)).toContain(created.id);
    const mail = await waitFor(
      async () => mailer.sent.find((m) => m.to === owner.email && m.subject.includes('export')),
      (m) => m !== undefined,
    );
    expect(mail!.text).toContain('/files/exports/');
  });

  it('NDJSON of members; filters validated; permissions per resource; another org sees nothing', async () => {
    const res = await api(owner, 'POST', exportsUrl(owner.orgId), { resource: 'members', format: 'ndjson', filters: { role: 'viewer' } });
    expect(res.statusCode).toBe(202);
    await runExports();
    const done = (await api(owner, 'GET', `${exportsUrl(owner.orgId)}/${res.json().id}`)).json();
    const rows = (await download(done.download.url)).body.trim().split('\n').map((l) => JSON.parse(l));
    expect(rows).toEqual([expect.objectContaining({ user_id: viewer.userId, email: viewer.email, role: 'viewer' })]);

    const bad = [
      { resource: 'tasks', format: 'csv', filters: { projectId: 'nope' } },
      { resource: 'tasks', format: 'csv', filters: { unknown: 1 } },
      { resource: 'invoices', format: 'csv', filters: { status: ['open'] } },
      { resource: 'nope', format: 'csv' },
      { resource: 'tasks', format: 'xlsx' },
      { resource: 'tasks', format: 'csv', extra: true },
    ];
    for (const body of bad) expect((await api(owner, 'POST', exportsUrl(owner.orgId), body)).statusCode, JSON.stringify(body)).toBe(400);
    // Well-formed filters pass (the uuid format is known to the filter checker, not only to route validators).
    const filtered = await api(owner, 'POST', exportsUrl(owner.orgId), { resource: 'tasks', format: 'csv', filters: { projectId: '0190a4c2-0000-7000-8000-000000000001' } });
    expect(filtered.statusCode, filtered.body).toBe(202);
    expect((await api(owner, 'DELETE', `${exportsUrl(owner.orgId)}/${filtered.json().id}`)).statusCode).toBeLessThan(300); // out of the next tests' queue
    expect((await api(viewer, 'POST', exportsUrl(owner.orgId), { resource: 'tasks', format: 'csv' })).statusCode).toBe(403);
    expect((await api(other, 'GET', `${exportsUrl(owner.orgId)}/${res.json().id}`)).statusCode).toBe(404);
    expect((await api(other, 'GET', `${exportsUrl(other.orgId)}/${res.json().id}`)).statusCode).toBe(404);
  });

  it('one running export per org; cancel; retention deletes expired files', async () => {
    // From here on only runners under test claim exports (the platform's, nudged by each new export, would race them).
    await t.modules.reporting.close();
    runner = localRunner();
    const a1 = (await api(owner, 'POST', exportsUrl(owner.orgId), { resource: 'tasks', format: 'ndjson' })).json();
    const a2 = (await api(owner, 'POST', exportsUrl(owner.orgId), { resource: 'projects', format: 'csv' })).json();
    const b1 = (await api(other, 'POST', exportsUrl(other.orgId), { resource: 'projects', format: 'csv' })).json();
    const repo = createExportsRepo(t.db.scope('reporting_exports', 'reporting_export_jobs'));
    const first = await repo.claim(10, 60_000);
    const second = await repo.claim(10, 60_000);
    const third = await repo.claim(10, 60_000);
    expect(first?.exportId).toBe(a1.id);
    // a2 waits for a1 (same org); b1 (another org) runs beside it.
    expect(second?.exportId).toBe(b1.id);
    expect(third).toBeUndefined();
    // The global limit: with one slot, nothing more is claimed while one runs.
    await t.db.owner.updateTable('reporting_export_jobs').set({ state: 'queued', lease_until: null }).where('export_id', 'in', [a1.id, b1.id]).execute();
    expect((await repo.claim(1, 60_000))?.exportId).toBe(a1.id);
    expect(await repo.claim(1, 60_000)).toBeUndefined();
    await t.db.owner.updateTable('reporting_export_jobs').set({ state: 'queued', lease_until: null }).where('export_id', '=', a1.id).execute();

    const cancelled = await api(owner, 'DELETE', `${exportsUrl(owner.orgId)}/${a2.id}`);
    expect(cancelled.json()).toMatchObject({ status: 'cancelled' });
    await runExports();
    expect((await api(owner, 'GET', `${exportsUrl(owner.orgId)}/${a2.id}`)).json().status).toBe('cancelled');
    const finished = (await api(owner, 'GET', `${exportsUrl(owner.orgId)}/${a1.id}`)).json();
    expect(finished.status).toBe('succeeded');
    expect((await api(other, 'GET', `${exportsUrl(other.orgId)}/${b1.id}`)).json().status).toBe('succeeded');

    // Retention: past expires_at the file goes, the export says expired, the old link is 410.
    await t.db.owner.updateTable('reporting_export_jobs').set({ expires_at: new Date(Date.now() - 1000) }).where('export_id', '=', a1.id).execute();
    expect(await t.modules.reporting.deleteExpired()).toBe(1);
    expect((await api(owner, 'GET', `${exportsUrl(owner.orgId)}/${a1.id}`)).json()).toMatchObject({ status: 'expired', download: null });
    expect((await download(finished.download.url)).statusCode).toBe(410);
    // DELETE of a finished export removes its file at once.
    const gone = await api(other, 'DELETE', `${exportsUrl(other.orgId)}/${b1.id}`);
    expect(gone.json()).toMatchObject({ status: 'expired', download: null });
  });

  it('a failing batch read is retried from the last key (every row exactly once); persistent failure ends in a clear error state', async () => {
    const repo = createExportsRepo(t.db.scope('reporting_exports', 'reporting_export_jobs'));
    const real = t.db.scope(...SOURCE_TABLE_NAMES);
    let calls = 0;
    let failOn = new Set([3]);
    const flaky: DbScope<SourceTables> = {
      ...real,
      withTenantRead: (tenantId, fn, o) => {
        calls++;
        if (failOn.has(calls)) return Promise.reject(new Error('connection terminated unexpectedly'));
        return real.withTenantRead(tenantId, fn, o);
      },
    };
    runner = localRunner({ repo, sources: flaky, batchAttempts: 2 });
    const ok = (await api(owner, 'POST', exportsUrl(owner.orgId), { resource: 'tasks', format: 'ndjson' })).json();
    await runExports();
    const done = (await api(owner, 'GET', `${exportsUrl(owner.orgId)}/${ok.id}`)).json();
    expect(done.status).toBe('succeeded');
    const ids = (await download(done.download.url)).body.trim().split('\n').map((l) => JSON.parse(l).id);
    expect(ids).toHaveLength(8);
    expect(new Set(ids).size).toBe(8);

    calls = 0;
    failOn = new Set([2, 3, 4, 5, 6]);
    const bad = (await api(owner, 'POST', exportsUrl(owner.orgId), { resource: 'tasks', format: 'csv' })).json();
    await runExports();
    const failed = (await api(owner, 'GET', `${exportsUrl(owner.orgId)}/${bad.id}`)).json();
    expect(failed).toMatchObject({ status: 'failed', error: { code: 'REPORTING.EXPORT_FAILED' }, download: null });
    expect(failed.error.detail).not.toMatch(/connection|select/i);
    expect(fs.existsSync(path.join(dir, 'exports', owner.orgId, `${bad.id}.csv`))).toBe(false);
    expect(fs.readdirSync(path.join(dir, 'exports', owner.orgId)).filter((f) => f.endsWith('.partial'))).toEqual([]);
  });

  it('a part uploads while the next batches are read; one part in flight; checkpoints in part order; a stop mid-upload resumes with every row once', async () => {
    const repo = createExportsRepo(t.db.scope('reporting_exports', 'reporting_export_jobs'));
    const checkpoints: ExportCheckpoint[] = [];
    const spied: ExportsRepo = {
      ...repo,
      progress: (trx, tenantId, id, attempts, rowsDone, checkpoint) => {
        if (checkpoint) checkpoints.push(checkpoint);
        return repo.progress(trx, tenantId, id, attempts, rowsDone, checkpoint);
      },
    };
    const real = t.db.scope(...SOURCE_TABLE_NAMES);
    let reads = 0;
    const counted: DbScope<SourceTables> = { ...real, withTenantRead: (tenantId, fn, o) => (reads++, real.withTenantRead(tenantId, fn, o)) };
    // Uploads held until released: what the runner does meanwhile is what overlaps them.
    let inFlight = 0;
    let maxInFlight = 0;
    const readsAtUpload: number[] = [];
    const gates: Array<() => void> = [];
    const gated: ObjectStorage = {
      ...t.storage,
      minPartBytes: t.storage.minPartBytes,
      async uploadPart(state, part) {
        inFlight++;
        maxInFlight = Math.max(maxInFlight, inFlight);
        readsAtUpload.push(reads);
        await new Promise<void>((r) => gates.push(r));
        try {
          return await t.storage.uploadPart(state, part);
        } finally {
          inFlight--;
        }
      },
    };
    const release = async (until: () => boolean) => {
      for (let i = 0; i < 500 && !until(); i++) {
        gates.shift()?.();
        await new Promise((r) => setTimeout(r, 5));
      }
    };
    // Every batch (3 rows) is a part (1 byte minimum): 8 tasks → parts of 3, 3 and 2 rows.
    const config = { ...t.config.reporting, exportPartBytes: 1 };
    const e = (await api(owner, 'POST', exportsUrl(owner.orgId), { resource: 'tasks', format: 'csv' })).json();

    // First worker: stopped (shutdown) while its first part uploads.
    runner = localRunner({ repo: spied, sources: counted, storage: gated, config });
    void runner.kick();
    await waitFor(async () => gates.length, (n) => n === 1);
    // While the first part is held, the batch after the next one is read: reads do not wait for uploads.
    await waitFor(async () => reads, (n) => n >= 4);
    expect(readsAtUpload).toEqual([3]); // the count, the first batch and the one read ahead when the first part began
    expect(checkpoints.map((c) => c.rows)).toEqual([0]); // the upload begun, nothing in it yet
    const stopping = runner.close();
    let stopped = false;
    void stopping.then(() => (stopped = true));
    await release(() => stopped);
    await stopping;
    expect(maxInFlight).toBe(1);
    // A part was uploaded after the last checkpoint (it was in flight when the stop was seen): not vouched for,
    // so the next worker writes it again over the same bytes.
    const parts = () => checkpoints.filter((c) => c.rows > 0);
    expect(parts().length).toBeGreaterThan(0);
    expect(readsAtUpload.length).toBeGreaterThan(parts().length);
    // Handed back: the job queued again, the export keeping its checkpoint.
    expect((await t.db.owner.selectFrom('reporting_export_jobs').select('state').where('export_id', '=', e.id).executeTakeFirstOrThrow()).state).toBe('queued');

    // Second worker: continues from the checkpoint.
    runner = localRunner({ repo: spied, sources: counted, storage: gated, config });
    const finishing = runExports();
    let finished = false;
    void finishing.then(() => (finished = true));
    await release(() => finished);
    await finishing;
    expect(maxInFlight).toBe(1);
    const done = (await api(owner, 'GET', `${exportsUrl(owner.orgId)}/${e.id}`)).json();
    expect(done).toMatchObject({ status: 'succeeded', rowsDone: 8 });
    const lines = (await download(done.download.url)).body.trim().split('\n');
    expect(lines[0]).toMatch(/^id,key,/);
    const ids = lines.slice(1).map((l) => l.slice(0, l.indexOf(',')));
    expect(ids).toHaveLength(8);
    expect(new Set(ids).size).toBe(8);
    expect(ids).toEqual([...ids].sort());
    // Checkpoints in part order, each cursor the last id of the rows its bytes hold.
    expect(checkpoints.map((c) => c.rows)).toEqual([...checkpoints.map((c) => c.rows)].sort((a, b) => a - b));
    expect(checkpoints.at(-1)!.rows).toBe(8);
    for (const c of parts()) expect(c.after).toBe(ids[c.rows - 1]);
  });

  it('EXPORT_MAX_ROWS_PER_SEC paces the batch reads', async () => {
    const real = t.db.scope(...SOURCE_TABLE_NAMES);
    const readAt: number[] = [];
    const timed: DbScope<SourceTables> = { ...real, withTenantRead: (tenantId, fn, o) => (readAt.push(Date.now()), real.withTenantRead(tenantId, fn, o)) };
    // 8 tasks in batches of 3 at 20 rows/s: the second batch's read no sooner than 150 ms after the export's
    // first batch started, the third no sooner than 300 ms.
    runner = localRunner({ sources: timed, config: { ...t.config.reporting, exportMaxRowsPerSec: 20 } });
    const e = (await api(owner, 'POST', exportsUrl(owner.orgId), { resource: 'tasks', format: 'csv' })).json();
    await runExports();
    expect((await api(owner, 'GET', `${exportsUrl(owner.orgId)}/${e.id}`)).json()).toMatchObject({ status: 'succeeded', rowsDone: 8 });
    // readAt: the count, then the three batches.
    expect(readAt).toHaveLength(4);
    expect(readAt[2]! - readAt[1]!).toBeGreaterThanOrEqual(140);
    expect(readAt[3]! - readAt[1]!).toBeGreaterThanOrEqual(290);
  });

  it('a storage failure fails the export and leaves no file', async () => {
    const failing: ObjectStorage = {
      ...t.storage,
      minPartBytes: t.storage.minPartBytes,
      async uploadPart() {
        throw new Error('bucket unavailable');
      },
    };
    runner = localRunner({ storage: failing });
    const e = (await api(owner, 'POST', exportsUrl(owner.orgId), { resource: 'projects', format: 'csv' })).json();
    await runExports();
    expect((await api(owner, 'GET', `${exportsUrl(owner.orgId)}/${e.id}`)).json()).toMatchObject({ status: 'failed', error: { code: 'REPORTING.EXPORT_FAILED' } });
  });

  it('reports answer from read models maintained by task events; rebuild recomputes them and reports drift', async () => {
    const tasks = (await api(owner, 'GET', `/v1/orgs/${owner.orgId}/projects/${projectId}/tasks?limit=5`)).json().data;
    const patch = async (id: string, status: string) => {
      const etag = (await api(owner, 'GET', `/v1/orgs/${owner.orgId}/tasks/${id}`)).headers.etag as string;
      const res = await api(owner, 'PATCH', `/v1/orgs/${owner.orgId}/tasks/${id}`, { status }, { 'if-match': etag });
      expect(res.statusCode, res.body).toBe(200);
    };
    for (const task of tasks.slice(0, 3)) await patch(task.id, 'done');
    await patch(tasks[3].id, 'in_progress');
    const url = `/v1/orgs/${owner.orgId}/reports/project-tasks?projectId=${projectId}`;
    const report = await waitFor(
      async () => (await api(viewer, 'GET', url)).json(),
      (r) => r.completedInRange === 3 && r.openByStatus?.in_progress === 1,
    );
    expect(report.weeks.reduce((a: number, w: { created: number }) => a + w.created, 0)).toBe(8);
    expect(report.weeks.reduce((a: number, w: { completed: number }) => a + w.completed, 0)).toBe(3);
    expect(report.openByStatus).toEqual({ todo: 4, in_progress: 1 });
    expect(report.overdue).toBe(5);
    expect(report.medianCycleTimeHours).toBeGreaterThanOrEqual(0);
    const members = (await api(viewer, 'GET', `/v1/orgs/${owner.orgId}/reports/active-members`)).json();
    expect(members).toMatchObject({ name: 'active-members', activeMembers: 1 });

    // Bad input and isolation.
    expect((await api(viewer, 'GET', `/v1/orgs/${owner.orgId}/reports/project-tasks`)).statusCode).toBe(400);
    expect((await api(viewer, 'GET', `/v1/orgs/${owner.orgId}/reports/nope`)).statusCode).toBe(400);
    expect((await api(viewer, 'GET', `/v1/orgs/${owner.orgId}/reports/active-members?from=2025-01-02T00:00:00Z&to=2025-01-01T00:00:00Z`)).statusCode).toBe(400);
    expect((await api(viewer, 'GET', `/v1/orgs/${owner.orgId}/reports/active-members?from=2020-01-01T00:00:00Z&to=2025-01-01T00:00:00Z`)).statusCode).toBe(400);
    expect((await api(other, 'GET', `/v1/orgs/${other.orgId}/reports/project-tasks?projectId=${projectId}`)).statusCode).toBe(404);

    // Drift: lose part of the read model, then rebuild.
    await t.db.withTenant(owner.orgId, (trx) => sql`delete from reporting_task_facts where task_id = ${tasks[4].id}`.execute(trx));
    const lines: string[] = [];
    expect(await runReportsCommand(t.modules.reporting, ['rebuild', '--org', owner.orgId], (l) => lines.push(l))).toBe(0);
    expect(lines[0]).toMatch(new RegExp(`^drift +${owner.orgId} taskFacts=1 `));
    const again = await t.modules.reporting.rebuild(owner.orgId);
    expect(again[0]!.drift).toEqual({ taskFacts: 0, projectWeeks: 0, memberDays: 0 });
    expect((await api(viewer, 'GET', url)).json()).toMatchObject({ openByStatus: { todo: 4, in_progress: 1 }, overdue: 5 });
    const all = await t.modules.reporting.rebuild();
    expect(all.map((r) => r.orgId)).toEqual(expect.arrayContaining([owner.orgId, other.orgId]));
    expect(await runReportsCommand(t.modules.reporting, ['rebuild', '--org', 'nope'], () => {})).toBe(2);
    expect(await runReportsCommand(t.modules.reporting, ['rebuild', 'x'], () => {})).toBe(2);
  });
});
