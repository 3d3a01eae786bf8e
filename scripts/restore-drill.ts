/**
 * Backup and point-in-time-restore drill (`npm run drill:restore`; CI runs it through
 * test/deploy/restore-drill.test.ts on a small dataset). On loopback, in a temporary directory:
 *
 *   1. a fresh Postgres with WAL archiving (archive_command → an archive directory), Plinth migrated;
 *   2. data written through the real API (signups, projects, tasks: audit records included);
 *   3. a base backup (pg_basebackup) and a logical one (`plinth backup`, pg_dump custom format);
 *   4. more writes, the recovery target time T, then writes after T that must NOT come back;
 *   5. a second Postgres restored from the base backup + archived WAL up to T (recovery_target_time);
 *   6. checks: row counts equal those at T in every table, nothing written after T, `plinth audit verify`
 *      passes on the restored database; the logical dump restores to the counts at its own time.
 *
 * Exits non-zero (or throws, from the test) when any check fails. Every process it starts is stopped.
 */
import { execFile, spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { promisify } from 'node:util';
import pg from 'pg';
import { freePort } from '../src/platform/testing/ports.ts';

const run = promisify(execFile);
const ROOT = path.resolve(import.meta.dirname, '..');
const PG_BIN = process.env.PG_BIN ?? '/usr/lib/postgresql/15/bin';
const TABLES = ['users', 'organizations', 'memberships', 'projects', 'tasks', 'audit_events', 'outbox'];

export interface DrillReport {
  baseBackupMs: number;
  restoreMs: number;
  countsAtTarget: Record<string, number>;
  countsRestored: Record<string, number>;
  writtenAfterTarget: number;
  foundAfterTarget: number;
  auditVerify: { exitCode: number; output: string };
  logical: { countsAtDump: Record<string, number>; countsRestored: Record<string, number> };
  ok: boolean;
}

function asPostgres(cmd: string, args: string[]): [string, string[]] {
  return process.getuid?.() === 0 ? ['runuser', ['-u', 'postgres', '--', cmd, ...args]] : [cmd, args];
}

interface Cluster {
  port: number;
  data: string;
  url(db?: string): string;
  stop(): Promise<void>;
}

async function startCluster(dir: string, data: string, extra: string[]): Promise<Cluster> {
  const port = await freePort();
  const opts = [`-p ${port}`, `-k ${dir}`, '-c listen_addresses=127.0.0.1', '-c fsync=off', '-c max_connections=40', ...extra].join(' ');
  await run(...asPostgres(`${PG_BIN}/pg_ctl`, ['-D', data, '-o', opts, '-l', `${data}.log`, '-w', '-t', '60', 'start']));
  return {
    port,
    data,
    url: (db = 'plinth') => `postgres://postgres@127.0.0.1:${port}/${db}`,
    stop: async () => void (await run(...asPostgres(`${PG_BIN}/pg_ctl`, ['-D', data, '-m', 'fast', '-w', 'stop'])).catch(() => undefined)),
  };
}

async function counts(url: string): Promise<Record<string, number>> {
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  try {
    const out: Record<string, number> = {};
    for (const t of TABLES) out[t] = Number((await c.query(`select count(*)::int as n from ${t}`)).rows[0].n);
    return out;
  } finally {
    await c.end();
  }
}

/** Runs the plinth CLI (from source) against a database; resolves with its exit code and output. */
function plinth(args: string[], databaseUrl: string): Promise<{ exitCode: number; output: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, ['--import', 'tsx', path.join(ROOT, 'src/cli.ts'), ...args], {
      cwd: ROOT,
      env: { ...process.env, DATABASE_URL: databaseUrl, LOG_LEVEL: 'error', NODE_ENV: 'test', REDIS_URL: '', TEST_DATABASE_URL: '' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let output = '';
    child.stdout.on('data', (d) => (output += d));
    child.stderr.on('data', (d) => (output += d));
    const timer = setTimeout(() => child.kill('SIGKILL'), 120_000);
    child.on('exit', (code) => {
      clearTimeout(timer);
      resolve({ exitCode: code ?? 1, output });
    });
  });
}

/** Writes through the real API in-process (signup → project → tasks), so audit records are real too. */
async function writeThroughApi(databaseUrl: string, orgs: number, tasksPerOrg: number, tag: string): Promise<number> {
  const { compose, createApiApp } = await import('../src/main.ts');
  const { platform, modules } = await compose({
    env: { DATABASE_URL: databaseUrl, NODE_ENV: 'test', LOG_LEVEL: 'silent', RATE_LIMIT_ENABLED: 'false', SHUTDOWN_DELAY_MS: '0' },
  });
  const app = await createApiApp(platform, modules);
  let written = 0;
  try {
    for (let o = 0; o < orgs; o++) {
      const email = `drill-${tag}-${o}-${Date.now()}@example.com`;
      const s = await app.inject({ method: 'POST', url: '/v1/auth/signup', payload: { email, password: 'correct horse battery staple 9', name: 'Drill', organizationName: `Drill ${tag} ${o}` } });
      if (s.statusCode !== 201) throw new Error(`signup: ${s.statusCode} ${s.body}`);
      const { token, organization } = s.json() as { token: string; organization: { id: string } };
      const auth = { authorization: `Bearer ${token}` };
      const p = await app.inject({ method: 'POST', url: `/v1/orgs/${organization.id}/projects`, headers: auth, payload: { name: `P ${tag}`, key: `D${o}${tag.slice(0, 1).toUpperCase()}` } });
      if (p.statusCode !== 201) throw new Error(`project: ${p.statusCode} ${p.body}`);
      const projectId = (p.json() as { id: string }).id;
      for (let t = 0; t < tasksPerOrg; t++) {
        const r = await app.inject({ method: 'POST', url: `/v1/orgs/${organization.id}/projects/${projectId}/tasks`, headers: auth, payload: { title: `drill ${tag} ${t}` } });
        if (r.statusCode !== 201) throw new Error(`task: ${r.statusCode} ${r.body}`);
        written++;
      }
    }
  } finally {
    await app.close();
    await platform.lifecycle.shutdown('drill writes done');
  }
  return written;
}

/** Chains the audit events written so far (what the worker's sequencer does every second). */
async function sequenceAudit(databaseUrl: string): Promise<void> {
  const r = await plinth(['audit', 'sequence'], databaseUrl);
  if (r.exitCode !== 0) throw new Error(`plinth audit sequence failed: ${r.output}`);
}

export async function runRestoreDrill(opts: { orgs?: number; tasksPerOrg?: number; log?: (msg: string) => void } = {}): Promise<DrillReport> {
  const log = opts.log ?? (() => {});
  const orgs = opts.orgs ?? 2;
  const tasks = opts.tasksPerOrg ?? 10;
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'plinth-drill-'));
  fs.chmodSync(dir, 0o777);
  const archive = path.join(dir, 'archive');
  const primaryData = path.join(dir, 'primary');
  const baseDir = path.join(dir, 'base');
  const restoredData = path.join(dir, 'restored');
  fs.mkdirSync(archive);
  if (process.getuid?.() === 0) await run('chown', ['-R', 'postgres', dir]);
  const started: Cluster[] = [];
  try {
    await run(...asPostgres(`${PG_BIN}/initdb`, ['-D', primaryData, '-U', 'postgres', '--auth=trust', '-E', 'UTF8', '--no-sync']));
    const primary = await startCluster(dir, primaryData, ['-c wal_level=replica', '-c archive_mode=on', `-c archive_command='cp %p ${archive}/%f'`, '-c archive_timeout=60']);
    started.push(primary);
    const admin = new pg.Client({ connectionString: primary.url('postgres') });
    await admin.connect();
    await admin.query('create database plinth');
    log('primary up, migrating and writing the first batch');
    await writeThroughApi(primary.url(), orgs, tasks, 'a');
    await sequenceAudit(primary.url());

    let t0 = Date.now();
    await run(...asPostgres(`${PG_BIN}/pg_basebackup`, ['-d', primary.url('postgres'), '-D', baseDir, '--wal-method=stream', '--checkpoint=fast']));
    const baseBackupMs = Date.now() - t0;
    const dumpFile = path.join(dir, 'plinth.dump');
    const dump = await plinth(['backup', '--out', dumpFile], primary.url());
    if (dump.exitCode !== 0) throw new Error(`plinth backup failed: ${dump.output}`);
    const countsAtDump = await counts(primary.url());
    log('base and logical backups taken; second batch, then the target time');
    await writeThroughApi(primary.url(), 1, tasks, 'b');
    await sequenceAudit(primary.url());
    const countsAtTarget = await counts(primary.url());
    const target = (await admin.query(`select now()::text as t`)).rows[0].t as string;
    await new Promise((r) => setTimeout(r, 1_100));
    const writtenAfterTarget = await writeThroughApi(primary.url(), 1, tasks, 'c');
    // Close the current WAL segment so the archive holds everything up to (and past) the target.
    const { rows } = await admin.query('select pg_walfile_name(pg_current_wal_lsn()) as wal');
    await admin.query('select pg_switch_wal()');
    const deadline = Date.now() + 30_000;
    while (!fs.existsSync(path.join(archive, rows[0].wal as string))) {
      if (Date.now() > deadline) throw new Error(`WAL segment ${rows[0].wal} was not archived within 30 s`);
      await new Promise((r) => setTimeout(r, 200));
    }
    await admin.end();

    log(`restoring the base backup to ${target}`);
    t0 = Date.now();
    await run('cp', ['-a', baseDir, restoredData]);
    fs.writeFileSync(path.join(restoredData, 'recovery.signal'), '');
    fs.appendFileSync(
      path.join(restoredData, 'postgresql.auto.conf'),
      `\nrestore_command = 'cp ${archive}/%f %p'\nrecovery_target_time = '${target}'\nrecovery_target_action = 'promote'\n`,
    );
    if (process.getuid?.() === 0) await run('chown', ['-R', 'postgres', restoredData]);
    const restored = await startCluster(dir, restoredData, ['-c archive_mode=off']);
    started.push(restored);
    const probe = new pg.Client({ connectionString: restored.url('postgres') });
    await probe.connect();
    while ((await probe.query('select pg_is_in_recovery() as r')).rows[0].r) {
      if (Date.now() - t0 > 60_000) throw new Error('the restored cluster did not leave recovery within 60 s');
      await new Promise((r) => setTimeout(r, 200));
    }
    await probe.end();
    const restoreMs = Date.now() - t0;
    const countsRestored = await counts(restored.url());
    const c = new pg.Client({ connectionString: restored.url() });
    await c.connect();
    const foundAfterTarget = Number((await c.query(`select count(*)::int as n from tasks where title like 'drill c %'`)).rows[0].n);
    await c.end();
    const auditVerify = await plinth(['audit', 'verify'], restored.url());

    log('restoring the logical dump into a new database');
    const r2 = new pg.Client({ connectionString: restored.url('postgres') });
    await r2.connect();
    await r2.query('create database plinth_logical');
    await r2.end();
    await run(`${PG_BIN}/pg_restore`, ['--no-owner', '--exit-on-error', '--dbname', restored.url('plinth_logical'), dumpFile]);
    const logicalRestored = await counts(restored.url('plinth_logical'));

    const ok =
      JSON.stringify(countsRestored) === JSON.stringify(countsAtTarget) &&
      foundAfterTarget === 0 &&
      auditVerify.exitCode === 0 &&
      JSON.stringify(logicalRestored) === JSON.stringify(countsAtDump);
    return {
      baseBackupMs,
      restoreMs,
      countsAtTarget,
      countsRestored,
      writtenAfterTarget,
      foundAfterTarget,
      auditVerify,
      logical: { countsAtDump, countsRestored: logicalRestored },
      ok,
    };
  } finally {
    for (const c of started.reverse()) await c.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const report = await runRestoreDrill({ log: (m) => console.log(`· ${m}`) });
  console.log(JSON.stringify(report, null, 2));
  console.log(report.ok ? 'restore drill: PASS' : 'restore drill: FAIL');
  process.exit(report.ok ? 0 : 1);
}
