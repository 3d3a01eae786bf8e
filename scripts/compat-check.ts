/**
 * N-1 compatibility (`npm run compat`; CI runs it after the services suite). A rolling deploy runs the
 * previous release and this one against one schema, and a rollback runs the previous release against the
 * schema this one migrated; neither may need a schema rollback (ADR 0007). On the local Postgres, with the
 * previous release rebuilt from deploy/releases.json's commit (git archive + npm ci):
 *
 *   1. every migration added since the previous release declares `phase = 'expand'`;
 *   2. the previous release migrates a fresh database and serves (smoke: signup, project, idempotent task
 *      create, list, update);
 *   3. this release refuses to start on that schema (pending migrations: its pods wait for the migration
 *      job) instead of running against it;
 *   4. this release's migration runs while the previous release keeps serving: 0 failed requests;
 *   5. the previous release still serves on the new schema (rollback needs no schema rollback), and this
 *      release starts and serves beside it.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import pg from 'pg';
import { freePort } from '../src/platform/testing/ports.ts';

const ROOT = path.resolve(import.meta.dirname, '..');
const BASE_URL = process.env.COMPAT_DATABASE_URL ?? process.env.TEST_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';

interface Step {
  step: string;
  ok: boolean;
  detail?: string;
}

function dbUrl(name: string): string {
  const u = new URL(BASE_URL);
  u.pathname = `/${name}`;
  return u.toString();
}

/** The previous release's source, from git, with its own dependencies installed from its own lockfile. */
export function buildPrevious(dir: string, commit: string): string {
  execFileSync('git', ['cat-file', '-e', `${commit}^{commit}`], { cwd: ROOT, stdio: 'ignore' });
  const out = path.join(dir, 'previous');
  fs.mkdirSync(out, { recursive: true });
  execFileSync('bash', ['-c', `git archive ${commit} | tar -x -C '${out}'`], { cwd: ROOT });
  if (process.env.COMPAT_LINK_NODE_MODULES === '1') {
    fs.symlinkSync(path.join(ROOT, 'node_modules'), path.join(out, 'node_modules'));
  } else {
    execFileSync('npm', ['ci', '--prefer-offline', '--no-audit', '--no-fund', '--loglevel=error'], { cwd: out, stdio: 'inherit' });
  }
  return out;
}

function cli(root: string, args: string[], env: Record<string, string>): { child: ChildProcess; output: () => string; exited: Promise<number> } {
  const child = spawn(process.execPath, ['--import', 'tsx', path.join(root, 'src/cli.ts'), ...args], {
    cwd: root,
    env: { ...process.env, NODE_ENV: 'development', LOG_LEVEL: 'warn', REDIS_URL: '', SHUTDOWN_DELAY_MS: '0', RATE_LIMIT_ENABLED: 'false', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  child.stdout!.on('data', (d) => (output += d));
  child.stderr!.on('data', (d) => (output += d));
  const exited = new Promise<number>((resolve) => child.on('exit', (code) => resolve(code ?? 1)));
  return { child, output: () => output, exited };
}

async function runToEnd(root: string, args: string[], env: Record<string, string>, timeoutMs = 120_000): Promise<{ code: number; output: string }> {
  const p = cli(root, args, env);
  const timer = setTimeout(() => p.child.kill('SIGKILL'), timeoutMs);
  const code = await p.exited;
  clearTimeout(timer);
  return { code, output: p.output() };
}

interface Api {
  url: string;
  stop(): Promise<void>;
}

async function startApi(root: string, databaseUrl: string): Promise<Api> {
  const port = await freePort();
  const p = cli(root, ['start'], { DATABASE_URL: databaseUrl, PORT: String(port), MIGRATE_ON_START: 'false' });
  const url = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + 60_000;
  for (;;) {
    const ready = await fetch(`${url}/readyz`).then((r) => r.ok).catch(() => false);
    if (ready) break;
    if (p.child.exitCode !== null || Date.now() > deadline) {
      p.child.kill('SIGKILL');
      throw new Error(`API from ${root} did not become ready:\n${p.output().slice(-2000)}`);
    }
    await new Promise((r) => setTimeout(r, 200));
  }
  return {
    url,
    async stop() {
      p.child.kill('SIGTERM');
      const timer = setTimeout(() => p.child.kill('SIGKILL'), 20_000);
      await p.exited;
      clearTimeout(timer);
    },
  };
}

async function call(api: Api, method: string, p: string, body?: unknown, headers: Record<string, string> = {}): Promise<Record<string, any>> {
  const res = await fetch(`${api.url}${p}`, {
    method,
    headers: { ...(body ? { 'content-type': 'application/json' } : {}), ...headers },
    body: body ? JSON.stringify(body) : undefined,
  });
  const text = await res.text();
  if (res.status >= 400) throw new Error(`${method} ${p} → ${res.status} ${text.slice(0, 300)}`);
  return text ? (JSON.parse(text) as Record<string, any>) : {};
}

/** One user journey through the API; throws on the first answer that is not what a client expects. */
async function smoke(api: Api, tag: string): Promise<{ org: string; auth: Record<string, string> }> {
  const email = `compat-${tag}-${randomBytes(4).toString('hex')}@example.com`;
  const s = await call(api, 'POST', '/v1/auth/signup', { email, password: 'correct horse battery staple 9', name: 'Compat', organizationName: `Compat ${tag}` });
  const auth = { authorization: `Bearer ${s.token}` };
  const org = s.organization.id as string;
  const project = await call(api, 'POST', `/v1/orgs/${org}/projects`, { name: `Compat ${tag}`, key: `C${randomBytes(2).toString('hex').toUpperCase().replace(/[0-9]/g, 'X')}` }, auth);
  const key = { 'idempotency-key': `compat-${randomBytes(6).toString('hex')}` };
  const task = await call(api, 'POST', `/v1/orgs/${org}/projects/${project.id}/tasks`, { title: `compat ${tag}` }, { ...auth, ...key });
  const again = await call(api, 'POST', `/v1/orgs/${org}/projects/${project.id}/tasks`, { title: `compat ${tag}` }, { ...auth, ...key });
  if (again.id !== task.id) throw new Error('idempotent retry created a second task');
  await call(api, 'GET', `/v1/orgs/${org}/projects/${project.id}/tasks`, undefined, auth);
  await call(api, 'PATCH', `/v1/orgs/${org}/tasks/${task.id}`, { status: 'done' }, auth);
  await call(api, 'GET', `/v1/orgs/${org}/audit-events`, undefined, auth);
  return { org, auth };
}

export async function runCompatCheck(opts: { log?: (m: string) => void } = {}): Promise<{ steps: Step[]; ok: boolean }> {
  const log = opts.log ?? (() => {});
  const { previous } = JSON.parse(fs.readFileSync(path.join(ROOT, 'deploy/releases.json'), 'utf8')) as { previous: { version: string; commit: string } };
  const steps: Step[] = [];
  const check = (step: string, ok: boolean, detail?: string) => {
    steps.push({ step, ok, detail });
    log(`${ok ? 'ok  ' : 'FAIL'} ${step}${detail ? ` — ${detail}` : ''}`);
  };
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'plinth-compat-'));
  const name = `plinth_compat_${Date.now().toString(36)}`;
  const admin = new pg.Client({ connectionString: BASE_URL });
  await admin.connect();
  const apis: Api[] = [];
  try {
    log(`building the previous release ${previous.version} (${previous.commit.slice(0, 8)})`);
    const prev = buildPrevious(dir, previous.commit);

    const migrationNames = (root: string) => fs.readdirSync(path.join(root, 'migrations')).filter((f) => /^\d{4}_.*\.ts$/.test(f));
    const added = migrationNames(ROOT).filter((f) => !migrationNames(prev).includes(f));
    const notExpand: string[] = [];
    for (const f of added) {
      const mod = (await import(pathToFileURL(path.join(ROOT, 'migrations', f)).href)) as { phase?: string };
      if (mod.phase !== 'expand') notExpand.push(f);
    }
    check(`every migration since ${previous.version} is an expand step (${added.length} added)`, notExpand.length === 0, notExpand.join(', ') || undefined);

    await admin.query(`create database ${name}`);
    const url = dbUrl(name);
    const prevMigrate = await runToEnd(prev, ['migrate'], { DATABASE_URL: url });
    check('the previous release migrates a fresh database', prevMigrate.code === 0, prevMigrate.code ? prevMigrate.output.slice(-500) : undefined);
    const old = await startApi(prev, url);
    apis.push(old);
    await smoke(old, 'prev');
    check('the previous release serves', true);

    const early = await runToEnd(ROOT, ['start'], { DATABASE_URL: url, PORT: String(await freePort()), MIGRATE_ON_START: 'false' }, 60_000);
    check('this release refuses to start before its migrations ran', early.code !== 0 && /Pending migrations/.test(early.output), early.output.match(/Pending migrations[^\n]*/)?.[0]);

    // The migration job runs while the previous release takes traffic.
    let failures = 0;
    let served = 0;
    let migrating = true;
    const traffic = (async () => {
      while (migrating) {
        await smoke(old, 'during').then(() => served++, () => failures++);
      }
    })();
    const newMigrate = await runToEnd(ROOT, ['migrate'], { DATABASE_URL: url });
    migrating = false;
    await traffic;
    check('this release migrates while the previous one serves', newMigrate.code === 0, newMigrate.code ? newMigrate.output.slice(-500) : undefined);
    check('no request of the previous release failed during the migration', failures === 0 && served > 0, `${served} journeys, ${failures} failed`);

    await smoke(old, 'after');
    check('the previous release serves on the new schema (rollback needs no schema rollback)', true);
    const current = await startApi(ROOT, url);
    apis.push(current);
    const written = await smoke(current, 'new');
    await smoke(old, 'beside');
    // The previous release reads what this one just wrote (e.g. audit events it has not sequenced yet).
    await call(old, 'GET', `/v1/orgs/${written.org}/audit-events`, undefined, written.auth);
    await call(old, 'GET', `/v1/orgs/${written.org}/projects`, undefined, written.auth);
    check('this release starts and serves beside the previous one', true);
  } catch (err) {
    check('compatibility run', false, (err as Error).message.slice(0, 1000));
  } finally {
    for (const a of apis) await a.stop().catch(() => {});
    await admin.query(`drop database if exists ${name} with (force)`).catch(() => {});
    await admin.end();
    fs.rmSync(dir, { recursive: true, force: true });
  }
  return { steps, ok: steps.every((s) => s.ok) };
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const r = await runCompatCheck({ log: (m) => console.log(m) });
  console.log(r.ok ? 'N-1 compatibility: PASS' : 'N-1 compatibility: FAIL');
  process.exit(r.ok ? 0 : 1);
}
