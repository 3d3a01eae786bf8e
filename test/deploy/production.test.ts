import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Redis } from 'ioredis';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { freePort } from '../helpers/own-services.ts';
import { havePgBouncer, havePostgresBinaries, startPgBouncer, startScramPostgres, type PgBouncer, type ScramPostgres } from '../helpers/prod-services.ts';

/**
 * docs/production.md, followed step by step on real processes on loopback: a password-checking Postgres,
 * PgBouncer in transaction pooling, Redis, and the compiled CLI (`npm run build`, as the image runs it) in
 * production mode as migrate job, API and worker. Runs with the service suites (TEST_DATABASE_URL and
 * TEST_REDIS_URL set) where pgbouncer and the Postgres binaries are installed; skipped otherwise.
 */
const enabled = Boolean(process.env.TEST_DATABASE_URL && process.env.TEST_REDIS_URL) && havePgBouncer && havePostgresBinaries;
const root = path.resolve(import.meta.dirname, '../..');
const PG_BIN = '/usr/lib/postgresql/15/bin';
const APP_PASSWORD = `app-${randomBytes(12).toString('hex')}`;
const ROTATED_PASSWORD = `app-${randomBytes(12).toString('hex')}`;

interface Proc {
  child: ChildProcess;
  output(): string;
  exited: Promise<number>;
}

function cli(args: string[], env: Record<string, string>, opts: { dist?: string; stdin?: string } = {}): Proc {
  const entry = path.join(opts.dist ?? path.join(root, 'dist'), 'src/cli.js');
  const child = spawn(process.execPath, [entry, ...args], {
    cwd: root,
    env: { PATH: process.env.PATH ?? '', ...env },
    stdio: [opts.stdin === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'],
  });
  if (opts.stdin !== undefined) child.stdin!.end(opts.stdin);
  let text = '';
  child.stdout!.on('data', (d) => (text += d));
  child.stderr!.on('data', (d) => (text += d));
  const exited = new Promise<number>((resolve) => child.once('exit', (code, signal) => resolve(code ?? (signal ? 128 : 1))));
  return { child, output: () => text, exited };
}

async function run(args: string[], env: Record<string, string>, opts: { dist?: string; stdin?: string } = {}) {
  const p = cli(args, env, opts);
  const code = await p.exited;
  return { code, output: p.output() };
}

async function waitReady(port: number, proc: Proc, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (proc.child.exitCode !== null) throw new Error(`exited ${proc.child.exitCode}:\n${proc.output()}`);
    const status = await fetch(`http://127.0.0.1:${port}/readyz`).then((r) => r.status, () => 0);
    if (status === 200) return;
    if (Date.now() > deadline) throw new Error(`not ready after ${timeoutMs} ms (last ${status}):\n${proc.output()}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

async function stop(proc: Proc): Promise<number> {
  if (proc.child.exitCode !== null) return proc.child.exitCode;
  proc.child.kill('SIGTERM');
  return proc.exited;
}

/** The one-line error rule: a single line, no stack frame. */
function oneLine(output: string): string {
  const lines = output.trim().split('\n');
  expect(lines, output).toHaveLength(1);
  expect(output).not.toMatch(/^\s+at /m);
  return lines[0]!;
}

describe.skipIf(!enabled)('docs/production.md on real processes (compiled build, production mode)', () => {
  let pgs: ScramPostgres;
  let bouncer: PgBouncer;
  let redis: Redis;
  const prefix = `plinth-prod-test:${randomBytes(4).toString('hex')}:`;
  const procs: Proc[] = [];
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'plinth-prod-'));
  let env: Record<string, string>;
  const start = (args: string[], extra: Record<string, string>, opts: { dist?: string } = {}) => {
    const p = cli(args, { ...env, ...extra }, opts);
    procs.push(p);
    return p;
  };
  const owner = async <T>(db: string, fn: (c: pg.Client) => Promise<T>): Promise<T> => {
    const c = new pg.Client({ connectionString: pgs.ownerUrl(db) });
    await c.connect();
    try {
      return await fn(c);
    } finally {
      await c.end();
    }
  };

  beforeAll(async () => {
    // What the image runs: the compiled build, made fresh from these sources.
    execFileSync(process.execPath, [path.join(root, 'scripts/build.mjs')], { cwd: root, stdio: 'ignore' });
    pgs = await startScramPostgres();
    await owner('postgres', (c) => c.query('create database plinth'));
    redis = new Redis(process.env.TEST_REDIS_URL!);
    env = {
      NODE_ENV: 'production',
      DATABASE_URL: pgs.ownerUrl('plinth'),
      REDIS_URL: process.env.TEST_REDIS_URL!,
      REDIS_PREFIX: prefix,
      WEBHOOK_SECRET_KEY: randomBytes(32).toString('base64'),
      HOST: '127.0.0.1',
      LOG_LEVEL: 'warn',
      MIGRATE_ON_START: 'false',
      SHUTDOWN_DELAY_MS: '0',
    };
  }, 180_000);

  afterAll(async () => {
    await Promise.all(procs.map((p) => (p.child.exitCode === null ? (p.child.kill('SIGKILL'), p.exited) : undefined)));
    if (redis) {
      const keys = await redis.keys(`${prefix}*`).catch(() => [] as string[]);
      if (keys.length > 0) await redis.del(...keys).catch(() => 0);
      redis.disconnect();
    }
    await bouncer?.destroy();
    await pgs?.destroy();
    fs.rmSync(work, { recursive: true, force: true });
  });

  it('first deploy: migrate (as the Job), app role password, PgBouncer, then API and worker through it', async () => {
    // Before the migration job: pods' init containers would wait; without waiting they say why.
    const early = await run(['migrate', '--check'], env);
    expect(early.code).toBe(1);
    expect(oneLine(early.output)).toMatch(/no migrations applied; run `plinth migrate` first/);

    const migrated = await run(['migrate'], env);
    expect(migrated.code, migrated.output).toBe(0);
    const short = await run(['db', 'set-app-password'], env, { stdin: 'too-short' });
    expect(short.code).toBe(1);
    expect(oneLine(short.output)).toMatch(/at least 16 characters/);
    const set = await run(['db', 'set-app-password'], env, { stdin: `${APP_PASSWORD}\n` });
    expect(set.code, set.output).toBe(0);
    bouncer = await startPgBouncer(pgs.ownerUrl(), pgs.port);
    env.DATABASE_APP_URL = bouncer.url('plinth_app', APP_PASSWORD, 'plinth');
    expect((await run(['migrate', '--check', '--wait=10'], env)).code).toBe(0);

    const apiPort = await freePort();
    const api = start(['start'], { PORT: String(apiPort), PLINTH_ROLE: 'api' });
    const metricsPort = await freePort();
    const worker = start(['worker'], { METRICS_PORT: String(metricsPort) });
    await waitReady(apiPort, api);

    const signup = await fetch(`http://127.0.0.1:${apiPort}/v1/auth/signup`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ email: 'ops@example.com', password: 'a long production password', name: 'Ops', organizationName: 'Ops Inc' }),
    });
    expect(signup.status).toBe(201);
    const { token, organization } = (await signup.json()) as { token: string; organization: { id: string } };
    const project = await fetch(`http://127.0.0.1:${apiPort}/v1/orgs/${organization.id}/projects`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` },
      body: JSON.stringify({ key: 'OPS', name: 'Operations' }),
    });
    expect(project.status).toBe(201);
    // The worker relays the project's event from the outbox (through PgBouncer and Redis).
    const deadline = Date.now() + 20_000;
    for (;;) {
      const { rows } = await owner('plinth', (c) => c.query<{ n: number }>('select count(*)::int as n from outbox where relayed_at is null'));
      if (rows[0]!.n === 0) break;
      if (Date.now() > deadline) throw new Error(`outbox not relayed:\n${worker.output()}`);
      await new Promise((r) => setTimeout(r, 200));
    }
    const metrics = await fetch(`http://127.0.0.1:${metricsPort}/metrics`).then((r) => r.text());
    expect(metrics).toMatch(/^plinth_outbox_backlog 0$/m);
    // The API's server connections are plinth_app's, opened by PgBouncer.
    const { rows } = await owner('plinth', (c) =>
      c.query<{ n: number }>(`select count(*)::int as n from pg_stat_activity where usename = 'plinth_app' and datname = 'plinth'`),
    );
    expect(rows[0]!.n).toBeGreaterThan(0);
    expect(api.output()).not.toMatch(/"level":(50|60)/);
  });

  it('a wrong app-role password: the API refuses to start with one line (no 500s served)', async () => {
    const port = await freePort();
    const wrong = await run(['start'], { ...env, PORT: String(port), PLINTH_ROLE: 'api', DATABASE_APP_URL: bouncer.url('plinth_app', 'wrong-password-123456', 'plinth') });
    expect(wrong.code).toBe(1);
    expect(oneLine(wrong.output)).toMatch(/refused the plinth_app login: .*authentication failed.*set-app-password/);
  });

  it('rotating the app role password: set it, refresh PgBouncer, restart; old login refused', async () => {
    const set = await run(['db', 'set-app-password'], env, { stdin: ROTATED_PASSWORD });
    expect(set.code, set.output).toBe(0);
    await bouncer.syncUsers();
    const port = await freePort();
    const rotated = start(['start'], { PORT: String(port), PLINTH_ROLE: 'api', DATABASE_APP_URL: bouncer.url('plinth_app', ROTATED_PASSWORD, 'plinth') });
    await waitReady(port, rotated);
    expect(await stop(rotated)).toBe(0);
    const old = await run(['start'], { ...env, PORT: String(await freePort()), PLINTH_ROLE: 'api' });
    expect(old.code).toBe(1);
    env.DATABASE_APP_URL = bouncer.url('plinth_app', ROTATED_PASSWORD, 'plinth');
  });

  it('backup with pg_dump, restore into a new database, and the release starts on the restored copy', async () => {
    const dump = path.join(work, 'plinth.dump');
    execFileSync(`${PG_BIN}/pg_dump`, ['--format=custom', '--file', dump, pgs.ownerUrl('plinth')]);
    await owner('postgres', (c) => c.query('create database plinth_restored'));
    execFileSync(`${PG_BIN}/pg_restore`, ['--dbname', pgs.ownerUrl('plinth_restored'), '--no-owner', '--exit-on-error', dump]);
    const restoredEnv = { ...env, DATABASE_URL: pgs.ownerUrl('plinth_restored'), DATABASE_APP_URL: bouncer.url('plinth_app', ROTATED_PASSWORD, 'plinth_restored') };
    // pg_dump leaves out the app role's per-database settings (statement timeout); migrate puts them back.
    const remigrated = await run(['migrate'], restoredEnv);
    expect(remigrated.code, remigrated.output).toBe(0);
    const settings = await owner('plinth_restored', (c) =>
      c.query<{ s: string[] }>(`select setconfig as s from pg_db_role_setting where setdatabase = (select oid from pg_database where datname = 'plinth_restored') and setrole = 'plinth_app'::regrole`),
    );
    expect(settings.rows[0]?.s).toContain('statement_timeout=30s');
    const { rows } = await owner('plinth_restored', (c) => c.query<{ n: number }>(`select count(*)::int as n from users where email = 'ops@example.com'`));
    expect(rows[0]!.n).toBe(1);
    const port = await freePort();
    const api = start(['start'], { ...restoredEnv, PORT: String(port), PLINTH_ROLE: 'api' });
    await waitReady(port, api);
    const login = await fetch(`http://127.0.0.1:${port}/v1/auth/login`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ email: 'ops@example.com', password: 'a long production password' }),
    });
    expect(login.status).toBe(200);
    expect(await stop(api)).toBe(0);
  });

  it('upgrade with an expand migration, then rollback: the older release starts on the newer schema', async () => {
    // Release "next" = this build plus one expand migration and one contract migration, in its own dist.
    const next = path.join(root, 'dist/.release-next');
    fs.rmSync(next, { recursive: true, force: true });
    fs.cpSync(path.join(root, 'dist/src'), path.join(next, 'src'), { recursive: true });
    fs.cpSync(path.join(root, 'dist/migrations'), path.join(next, 'migrations'), { recursive: true });
    const sums = JSON.parse(fs.readFileSync(path.join(next, 'migrations/checksums.json'), 'utf8'));
    const addMigration = (name: string, body: string) => {
      fs.writeFileSync(path.join(next, 'migrations', `${name}.js`), body);
      sums[name] = randomBytes(32).toString('hex');
      fs.writeFileSync(path.join(next, 'migrations/checksums.json'), JSON.stringify(sums));
    };
    addMigration(
      '9000_ops_expand',
      `import { sql } from 'kysely';\nexport const phase = 'expand';\nexport async function up(db) { await sql\`alter table outbox add column ops_note text\`.execute(db); }\n`,
    );
    const upgraded = await run(['migrate'], env, { dist: next });
    expect(upgraded.code, upgraded.output).toBe(0);
    // Rollback: the current (older) release starts on it, ready, and says what it runs beside.
    const port = await freePort();
    const older = start(['start'], { PORT: String(port), PLINTH_ROLE: 'api', LOG_LEVEL: 'info' });
    await waitReady(port, older);
    expect(older.output()).toMatch(/running beside expand migrations of a newer release/);
    expect(await stop(older)).toBe(0);
    // A contract migration (drops what older code may use) is not something the older release may run beside.
    addMigration('9001_ops_contract', `import { sql } from 'kysely';\nexport async function up(db) { await sql\`alter table outbox drop column ops_note\`.execute(db); }\n`);
    expect((await run(['migrate'], env, { dist: next })).code).toBe(0);
    const refused = await run(['start'], { ...env, PORT: String(await freePort()), PLINTH_ROLE: 'api' });
    expect(refused.code).toBe(1);
    expect(oneLine(refused.output)).toMatch(/9001_ops_contract was applied .* not an expand step/);
    // Forward again: the next release's code runs.
    const nextPort = await freePort();
    const again = start(['start'], { PORT: String(nextPort), PLINTH_ROLE: 'api' }, { dist: next });
    await waitReady(nextPort, again);
    expect(await stop(again)).toBe(0);
    fs.rmSync(next, { recursive: true, force: true });
  });

  it('shutdown: SIGTERM stops the API and the worker cleanly (exit 0)', async () => {
    for (const p of procs) if (p.child.exitCode === null) expect(await stop(p), p.output()).toBe(0);
  });
});
