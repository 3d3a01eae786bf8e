#!/usr/bin/env node
// Cold start and memory of the API, TypeScript through tsx versus the compiled build (npm run build first),
// on this Node.js and on another major (MEASURE_NODE_MAJORS, default "24"; fetched with npx node@N).
// Production mode against local Postgres/Redis (MEASURE_DATABASE_URL / MEASURE_REDIS_URL; a throwaway
// database). Per variant: RUNS cold starts, spawn → first 200 from /readyz, RSS then; then LOAD_S seconds
// of authenticated reads (50 connections) and the peak RSS (VmHWM). Prints a Markdown table.
import { spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import autocannon from 'autocannon';
import pg from 'pg';

const root = fileURLToPath(new URL('..', import.meta.url));
const RUNS = Number(process.env.RUNS ?? 3);
const LOAD_S = Number(process.env.LOAD_S ?? 10);
const baseUrl = process.env.MEASURE_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';
const redisUrl = process.env.MEASURE_REDIS_URL ?? 'redis://127.0.0.1:6379';
if (!fs.existsSync(path.join(root, 'dist/src/cli.js'))) throw new Error('run npm run build first');

const nodes = [{ label: `Node ${process.versions.node}`, bin: process.execPath }];
for (const major of (process.env.MEASURE_NODE_MAJORS ?? '24').split(',').filter(Boolean)) {
  const r = spawnSync('npx', ['-y', `node@${major}`, '-p', 'process.execPath + " " + process.versions.node'], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`npx node@${major}: ${r.stderr}`);
  const [bin, version] = r.stdout.trim().split(' ');
  nodes.push({ label: `Node ${version}`, bin });
}
const variants = nodes.flatMap((n) => [
  { ...n, how: 'tsx (src/cli.ts)', args: ['--import', 'tsx', path.join(root, 'src/cli.ts')] },
  { ...n, how: 'compiled (dist/src/cli.js)', args: [path.join(root, 'dist/src/cli.js')] },
]);

const dbName = `plinth_measure_${randomBytes(4).toString('hex')}`;
const admin = new pg.Client({ connectionString: baseUrl });
await admin.connect();
await admin.query(`create database ${dbName}`);
const dbUrl = new URL(baseUrl);
dbUrl.pathname = `/${dbName}`;
const env = {
  PATH: process.env.PATH,
  NODE_ENV: 'production',
  DATABASE_URL: dbUrl.toString(),
  REDIS_URL: redisUrl,
  REDIS_PREFIX: `plinth-measure:${dbName}:`,
  WEBHOOK_SECRET_KEY: randomBytes(32).toString('base64'),
  HOST: '127.0.0.1',
  LOG_LEVEL: 'warn',
  PLINTH_ROLE: 'api',
  MIGRATE_ON_START: 'false',
  SHUTDOWN_DELAY_MS: '0',
  RATE_LIMIT_ENABLED: 'false',
};

const freePort = () =>
  new Promise((resolve) => {
    const s = net.createServer().listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
const status = (pid) => fs.readFileSync(`/proc/${pid}/status`, 'utf8');
const mb = (pid, field) => Number(new RegExp(`${field}:\\s+(\\d+)`).exec(status(pid))[1]) / 1024;
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

async function startApi(v) {
  const port = await freePort();
  const t0 = performance.now();
  const child = spawn(v.bin, [...v.args, 'start'], { cwd: root, env: { ...env, PORT: String(port) }, stdio: ['ignore', 'ignore', 'pipe'] });
  let err = '';
  child.stderr.on('data', (d) => (err += d));
  for (;;) {
    if (child.exitCode !== null) throw new Error(`${v.how} exited ${child.exitCode}: ${err}`);
    const ok = await fetch(`http://127.0.0.1:${port}/readyz`).then((r) => r.status === 200, () => false);
    if (ok) break;
    await new Promise((r) => setTimeout(r, 20));
  }
  return { child, port, readyMs: performance.now() - t0 };
}
const stop = (child) => new Promise((resolve) => (child.once('exit', resolve), child.kill('SIGTERM')));

try {
  const m = spawnSync(process.execPath, [path.join(root, 'dist/src/cli.js'), 'migrate'], { env, encoding: 'utf8' });
  if (m.status !== 0) throw new Error(`migrate: ${m.stderr}`);
  const rows = [];
  for (const v of variants) {
    const ready = [];
    const rss = [];
    for (let i = 0; i < RUNS; i++) {
      const { child, readyMs } = await startApi(v);
      ready.push(readyMs);
      rss.push(mb(child.pid, 'VmRSS'));
      await stop(child);
    }
    // Peak under load: authenticated reads of one task (session, membership, cache, rate-limit path).
    const { child, port } = await startApi(v);
    const base = `http://127.0.0.1:${port}`;
    const post = (p, body, token) =>
      fetch(base + p, { method: 'POST', headers: { 'content-type': 'application/json', ...(token ? { authorization: `Bearer ${token}` } : {}) }, body: JSON.stringify(body) }).then((r) => r.json());
    const s = await post('/v1/auth/signup', { email: `m-${randomBytes(4).toString('hex')}@example.com`, password: 'measure password 123', name: 'M', organizationName: 'M' });
    const project = await post(`/v1/orgs/${s.organization.id}/projects`, { key: 'MEA', name: 'Measure' }, s.token);
    const task = await post(`/v1/orgs/${s.organization.id}/projects/${project.id}/tasks`, { title: 'measure' }, s.token);
    const load = await autocannon({ url: `${base}/v1/orgs/${s.organization.id}/tasks/${task.id}`, connections: 50, duration: LOAD_S, headers: { authorization: `Bearer ${s.token}` } });
    const peak = mb(child.pid, 'VmHWM');
    await stop(child);
    rows.push({ v, ready: median(ready), rss: median(rss), peak, rps: load.requests.average, non2xx: load.non2xx });
    console.error(`${v.label} ${v.how}: ready ${median(ready).toFixed(0)} ms, RSS ${median(rss).toFixed(0)} MB, peak ${peak.toFixed(0)} MB`);
  }
  console.log(`\n| runtime | how | cold start → /readyz 200 (median of ${RUNS}) | RSS when ready | peak RSS after ${LOAD_S} s of reads (50 conn.) | reads/s | non-2xx |`);
  console.log('|---|---|---|---|---|---|---|');
  for (const r of rows) {
    console.log(`| ${r.v.label} | ${r.v.how} | ${(r.ready / 1000).toFixed(2)} s | ${r.rss.toFixed(0)} MB | ${r.peak.toFixed(0)} MB | ${r.rps.toFixed(0)} | ${r.non2xx} |`);
  }
} finally {
  await admin.query(`drop database if exists ${dbName} with (force)`).catch(() => undefined);
  await admin.end();
}
