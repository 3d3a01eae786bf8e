import { fork, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { sql } from 'kysely';
import S3rver from 's3rver';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { signup, type SignedUp } from '../../../test/helpers/auth.ts';
import { bundleForNode } from '../../../test/helpers/bundle.ts';
import { waitFor } from '../../../test/helpers/jobs.ts';
import { createTestPlatform, type TestPlatform } from '../../../test/helpers/test-platform.ts';
import type { ObjectStorage } from '../../platform/storage/index.ts';
import { createS3Storage } from '../../platform/storage/s3-storage.ts';

const WORKER = fileURLToPath(new URL('../../../test/fixtures/reporting/export-worker.ts', import.meta.url));
const ROWS = Number(process.env.RESUME_EXPORT_ROWS ?? 100_000);

/**
 * Resumable exports: a worker process running an export is killed -9 twice mid-export; the next worker
 * continues from the checkpoint (progress never goes back) and the final file is byte-for-byte the file an
 * uninterrupted export wrote. Both storage adapters: the filesystem, and S3 multipart (a local s3rver).
 * Services run only (child processes on a real Postgres).
 */
describe.skipIf(!process.env.TEST_DATABASE_URL)('an export whose worker is killed -9 resumes from its checkpoint', () => {
  let t: TestPlatform;
  let owner: SignedUp;
  let dir: string;
  let worker: string;
  let s3server: S3rver;
  let s3: ObjectStorage;
  let s3url: string;
  let reference: string;
  const children: ChildProcess[] = [];

  beforeAll(async () => {
    worker = await bundleForNode(WORKER);
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'plinth-export-resume-'));
    t = await createTestPlatform({ env: { STORAGE_DIR: path.join(dir, 'files') } });
    owner = await signup(t.app, { organizationName: 'Resume' });
    await sql`
      insert into projects (tenant_id, id, key, name, created_by, task_counter)
      values (${owner.orgId}, gen_random_uuid(), 'RES', 'Resume', ${owner.userId}, ${ROWS})`.execute(t.db.owner);
    await sql`
      insert into tasks (tenant_id, id, project_id, number, title, status, labels, created_by)
      select p.tenant_id,
             (lpad(to_hex(1700000000000 + g), 12, '0') || '-7000-8000-' || lpad(to_hex(g), 12, '0'))::uuid,
             p.id, g, case when g % 7 = 0 then '=formula ' else 'task, "quoted" ' end || g || repeat(' pad', 25),
             (array['todo','in_progress','done','canceled'])[1 + g % 4], array['a','b'], ${owner.userId}
      from projects p, generate_series(1, ${ROWS}) g where p.tenant_id = ${owner.orgId}`.execute(t.db.owner);
    await sql`analyze tasks`.execute(t.db.owner);

    s3server = new S3rver({ port: 0, address: '127.0.0.1', silent: true, directory: path.join(dir, 's3'), configureBuckets: [{ name: 'exports', configs: [] }] });
    const { port } = (await s3server.run()) as { port: number };
    s3url = `http://127.0.0.1:${port}`;
    s3 = createS3Storage({ bucket: 'exports', region: 'us-east-1', endpoint: s3url, forcePathStyle: true, credentials: { accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER' } });

    // The reference: the same export, uninterrupted, in this process.
    const id = await requestExport();
    await t.modules.reporting.runner.kick();
    await t.modules.reporting.runner.drain();
    reference = sha256(fs.readFileSync(path.join(dir, 'files', 'exports', owner.orgId, `${id}.csv`)));
  }, 300_000);
  afterAll(async () => {
    for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
    await t?.modules.reporting.close();
    await t?.close();
    (s3server as unknown as { httpServer?: import('node:http').Server } | undefined)?.httpServer?.closeAllConnections();
    await s3server?.close();
    fs.rmSync(dir, { recursive: true, force: true });
    if (worker) fs.rmSync(worker, { force: true });
  });

  const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');
  async function requestExport(): Promise<string> {
    const res = await t.app.inject({ method: 'POST', url: `/v1/orgs/${owner.orgId}/exports`, headers: owner.auth, payload: { resource: 'tasks', format: 'csv' } });
    expect(res.statusCode).toBe(202);
    return res.json().id;
  }
  const state = async (id: string) =>
    (
      await sql<{ status: string; rows_done: string; attempts: number; cp_rows: string | null; cp_bytes: string | null; parts: number | null }>`
        select status, rows_done, attempts, checkpoint->>'rows' as cp_rows, checkpoint->>'bytes' as cp_bytes,
               jsonb_array_length(checkpoint->'upload'->'parts') as parts
        from reporting_exports where id = ${id}`.execute(t.db.owner)
    ).rows[0]!;

  function spawnWorker(env: Record<string, string>): Promise<ChildProcess> {
    const child = fork(worker, [], {
      execArgv: [],
      stdio: ['ignore', process.env.RESUME_DEBUG ? 'inherit' : 'ignore', 'inherit', 'ipc'],
      env: {
        ...process.env,
        NODE_ENV: 'test',
        LOG_LEVEL: process.env.RESUME_DEBUG ? 'info' : 'error',
        DATABASE_URL: t.testDb.url,
        REDIS_URL: '',
        MIGRATE_ON_START: 'false',
        EXPORT_BATCH_ROWS: '1000',
        EXPORT_LEASE_MS: '3000',
        DATABASE_POOL_MAX: '4',
        ...env,
      },
    });
    children.push(child);
    return new Promise((resolve, reject) => {
      child.once('message', () => resolve(child));
      child.once('exit', (code) => reject(new Error(`export worker exited (${code}) before it was ready`)));
    });
  }
  const finished = (status: string) => !['queued', 'running'].includes(status);
  const kill = async (c: ChildProcess) => {
    c.kill('SIGKILL');
    if (c.exitCode === null && c.signalCode === null) await new Promise((r) => c.once('exit', r));
  };

  async function killTwiceThenFinish(env: Record<string, string>, read: (id: string) => Promise<Buffer>) {
    const id = await requestExport();
    // Progress as seen: after a kill it never goes back behind the checkpoint taken before it (a restart from
    // the first row would show 0 rows done again).
    let checkpointRows = 0;
    const behind: string[] = [];
    const watch = async () => {
      const s = await state(id);
      if (Number(s.rows_done) < checkpointRows) behind.push(`${s.rows_done} < ${checkpointRows}`);
      return s;
    };
    for (let round = 1; round <= 2; round++) {
      const child = await spawnWorker(env);
      // Kill after at least one more part than last round is checkpointed, before the end.
      const s = await waitFor(watch, (x) => Number(x.cp_rows ?? 0) > checkpointRows || finished(x.status), 120_000, 10);
      await kill(child);
      expect(s.status, 'the export finished before the kill; raise RESUME_EXPORT_ROWS').toBe('running');
      const after = await state(id);
      expect(after.status).toBe('running');
      expect(after.attempts).toBeGreaterThanOrEqual(round); // one claim per worker (more if a lease lapsed on a stalled machine)
      expect(Number(after.cp_rows)).toBeLessThan(ROWS);
      checkpointRows = Number(after.cp_rows);
      expect(checkpointRows).toBeGreaterThan(0);
    }
    const last = await spawnWorker(env);
    const done = await waitFor(watch, (x) => finished(x.status), 180_000, 20);
    await kill(last);
    expect({ ...done, rows_done: Number(done.rows_done) }).toMatchObject({ status: 'succeeded', rows_done: ROWS, cp_rows: null });
    expect(done.attempts).toBeGreaterThanOrEqual(3);
    expect(behind).toEqual([]);
    const file = await read(id);
    expect(file.toString('utf8', 0, 3)).toBe('id,');
    expect(file.toString().split('\n').length).toBe(ROWS + 2); // header + rows + the final newline
    expect(sha256(file)).toBe(reference);
  }

  it('filesystem storage: killed twice, the final file equals the uninterrupted export', async () => {
    await killTwiceThenFinish({ STORAGE_DIR: path.join(dir, 'files'), EXPORT_PART_BYTES: String(256 * 1024) }, async (id) => {
      const base = path.join(dir, 'files', 'exports', owner.orgId);
      expect(fs.readdirSync(base).filter((f) => f.endsWith('.partial'))).toEqual([]);
      return fs.readFileSync(path.join(base, `${id}.csv`));
    });
  }, 400_000);

  it('S3 multipart storage: killed twice, the final object equals the uninterrupted export', async () => {
    await killTwiceThenFinish(
      {
        STORAGE_DRIVER: 's3',
        STORAGE_S3_BUCKET: 'exports',
        STORAGE_S3_ENDPOINT: s3url,
        STORAGE_S3_FORCE_PATH_STYLE: 'true',
        AWS_ACCESS_KEY_ID: 'S3RVER',
        AWS_SECRET_ACCESS_KEY: 'S3RVER',
        EXPORT_PART_BYTES: String(5 * 1024 * 1024),
      },
      async (id) => {
        const key = `exports/${owner.orgId}/${id}.csv`;
        const res = await fetch(await s3.signedUrl(key, { expiresInSec: 60, filename: 'x.csv', contentType: 'text/csv' }));
        expect(res.status).toBe(200);
        return Buffer.from(await res.arrayBuffer());
      },
    );
  }, 400_000);
});
