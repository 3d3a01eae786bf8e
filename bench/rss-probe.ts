// What the API process's memory is made of under the bench's load shapes, from outside (RSS from /proc,
// V8 heap spaces and external memory from its own /metrics). Starts `node dist/src/cli.js start` on the
// given (migrated or empty) database, signs up, then: idle → cached reads (closed loop) → creates → idle again;
// removes its Redis keys at the end (the database is the caller's). Prints each load's req/s, p99 and the
// process's CPU per request (to weigh a GC flag's memory against its CPU).
//   npx tsx bench/rss-probe.ts DATABASE_URL [--node-flags "--max-semi-space-size=4"] [--env K=V,…] [--seconds 5]
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import { Redis } from 'ioredis';
import { runLoad } from './lib/load.ts';
import { freePort, rssMbOf, waitHttp, ROOT } from './lib/processes.ts';

const args = process.argv.slice(2);
const opt = (name: string, dflt: string) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? args[i + 1]! : dflt;
};
const databaseUrl = args[0]!;
const seconds = Number(opt('seconds', '5'));
const extraEnv = Object.fromEntries(opt('env', '').split(',').filter(Boolean).map((kv) => kv.split('=') as [string, string]));
const port = await freePort();
const token = randomBytes(16).toString('hex');
const proc = spawn('node', [...opt('node-flags', '').split(' ').filter(Boolean), 'dist/src/cli.js', 'start'], {
  cwd: ROOT,
  stdio: ['ignore', 'ignore', 'inherit'],
  env: {
    ...process.env, NODE_ENV: 'production', LOG_LEVEL: 'warn', DATABASE_URL: databaseUrl, REDIS_URL: 'redis://127.0.0.1:6379',
    REDIS_PREFIX: `rss-probe:${token}:`, WEBHOOK_SECRET_KEY: randomBytes(32).toString('hex'), METRICS_TOKEN: token,
    RATE_LIMIT_PRINCIPAL: '10000000', RATE_LIMIT_ORG: '10000000', RATE_LIMIT_IP: '10000000', CONCURRENCY_LIMIT_ENABLED: 'false',
    PORT: String(port), HOST: '127.0.0.1', ...extraEnv,
  },
});
const base = `http://127.0.0.1:${port}`;
await waitHttp(`${base}/readyz`, 120_000);

async function snapshot(label: string) {
  const text = await (await fetch(`${base}/metrics`, { headers: { authorization: `Bearer ${token}` } })).text();
  const metric = (re: RegExp) => {
    let sum = 0;
    for (const line of text.split('\n')) if (re.test(line)) sum += Number(line.split(' ').pop());
    return Math.round(sum / 2 ** 20);
  };
  const spaces = Object.fromEntries(
    text.split('\n').filter((l) => l.startsWith('nodejs_heap_space_size_total_bytes{')).map((l) => [/space="(\w+)"/.exec(l)![1], Math.round(Number(l.split(' ').pop()) / 2 ** 20)]),
  );
  console.log(JSON.stringify({ label, rssMb: rssMbOf(proc.pid!), heapTotalMb: metric(/^nodejs_heap_size_total_bytes /), heapUsedMb: metric(/^nodejs_heap_size_used_bytes /), externalMb: metric(/^nodejs_external_memory_bytes /), spacesTotalMb: spaces }));
}

const post = async (path: string, body: object, auth?: string) => {
  const res = await fetch(`${base}${path}`, { method: 'POST', headers: { 'content-type': 'application/json', ...(auth ? { authorization: auth } : {}) }, body: JSON.stringify(body) });
  return res.json() as Promise<any>;
};
await snapshot('started');
const s = await post('/v1/auth/signup', { email: `rss-${token}@example.com`, password: 'correct horse battery staple 42!', name: 'Rss', organizationName: 'Rss probe' });
const auth = `Bearer ${s.token}`;
const orgId = s.organization.id;
const project = await post(`/v1/orgs/${orgId}/projects`, { key: 'RSS', name: 'Rss' }, auth);
const task = await post(`/v1/orgs/${orgId}/projects/${project.id}/tasks`, { title: 'probe' }, auth);
// The API process's CPU (user + system, from /proc; 10 ms ticks) per request of each load: what a GC flag costs.
const cpuMs = () => {
  const f = fs.readFileSync(`/proc/${proc.pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
  return (Number(f[11]) + Number(f[12])) * 10;
};
const measured = async (label: string, load: Parameters<typeof runLoad>[0]) => {
  const cpu0 = cpuMs();
  const r = await runLoad(load);
  const cpu = cpuMs() - cpu0;
  console.log(JSON.stringify({ label, okPerSec: r.okPerSec, p99Ms: r.latencyMs.p99, cpuUsPerRequest: Math.round((cpu * 1000) / Math.max(1, r.okPerSec * load.durationSec)) }));
};
await measured('cached reads', { baseUrl: base, durationSec: seconds, connections: 50, request: { path: `/v1/orgs/${orgId}/tasks/${task.id}`, headers: { authorization: auth } } });
await snapshot(`after ${seconds} s of cached reads (50 connections)`);
await measured('creates', { baseUrl: base, durationSec: seconds, connections: 8, request: { method: 'POST', path: `/v1/orgs/${orgId}/projects/${project.id}/tasks`, headers: { authorization: auth }, body: { title: 'load' } } });
await snapshot(`after ${seconds} s of creates (8 connections)`);
await new Promise((r) => setTimeout(r, 10_000));
await snapshot('idle 10 s later');
proc.kill('SIGTERM');
await new Promise((r) => proc.once('exit', r));
// Leave nothing behind in Redis: this run's prefix only.
const redis = new Redis('redis://127.0.0.1:6379');
for await (const keys of redis.scanStream({ match: `rss-probe:${token}:*`, count: 500 }) as AsyncIterable<string[]>) if (keys.length > 0) await redis.del(...keys);
redis.disconnect();
