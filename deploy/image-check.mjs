#!/usr/bin/env node
// Builds deploy/Dockerfile without a Docker engine, the way the engine would, and runs the result:
//   - the context is the repository filtered by .dockerignore;
//   - each stage is a scratch directory standing for its root filesystem; WORKDIR, COPY (also --from),
//     ENV and RUN are executed as written (RUN with the Node.js major of the FROM image on PATH);
//   - the final stage's files are made read-only and its ENTRYPOINT + CMD run as its numeric USER with only
//     a temporary directory writable (as with readOnlyRootFilesystem and a /tmp emptyDir): `migrate`, then
//     the API (`start`, PLINTH_ROLE=api) until /readyz answers 200, the HEALTHCHECK command, SIGTERM; then
//     `worker` and its HEALTHCHECK.
// Any instruction the Dockerfile relies on that is missing (a file not copied, a script not there) fails here.
// Needs Postgres and Redis: IMAGE_CHECK_DATABASE_URL / IMAGE_CHECK_REDIS_URL (defaults: the local ones);
// scratch space (~600 MB) under IMAGE_CHECK_TMPDIR, default /dev/shm;
// a throwaway database is created and dropped. Prints the timing of every step and the API's RSS.
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import pg from 'pg';

const root = fileURLToPath(new URL('..', import.meta.url));
const dockerfile = path.join(root, 'deploy/Dockerfile');
const baseUrl = process.env.IMAGE_CHECK_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';
const redisUrl = process.env.IMAGE_CHECK_REDIS_URL ?? 'redis://127.0.0.1:6379';
const keep = process.env.IMAGE_CHECK_KEEP === '1';
const timings = [];

async function timed(label, fn) {
  const t0 = performance.now();
  const out = await fn();
  const s = (performance.now() - t0) / 1000;
  timings.push([label, s]);
  console.log(`  ${label}: ${s.toFixed(1)} s`);
  return out;
}

let work; // the scratch directory, removed on the way out unless IMAGE_CHECK_KEEP=1
function fail(msg) {
  console.error(`image check FAILED: ${msg}`);
  if (work && !keep) execFileSync('rm', ['-rf', work]);
  process.exit(1);
}

// ---- Dockerfile parsing (the subset this Dockerfile uses; anything else is refused, not ignored) ----
function parseDockerfile(text) {
  const lines = text.replace(/\\\r?\n/g, ' ').split(/\r?\n/);
  const args = {};
  const stages = [];
  let stage;
  for (const raw of lines) {
    const line = raw.trim();
    if (!line || line.startsWith('#')) continue;
    const [, op, rest] = /^(\w+)\s+(.*)$/.exec(line) ?? fail(`cannot parse: ${line}`);
    const sub = (s) => s.replace(/\$\{(\w+)\}/g, (_, k) => args[k] ?? fail(`unknown ARG ${k}`));
    switch (op.toUpperCase()) {
      case 'ARG': {
        const [k, v] = rest.split('=');
        args[k] = v;
        break;
      }
      case 'FROM': {
        const [, image, name] = /^(\S+)(?:\s+AS\s+(\S+))?$/i.exec(sub(rest)) ?? fail(`FROM ${rest}`);
        stage = { name: name ?? `stage${stages.length}`, image, steps: [], env: {}, workdir: '/' };
        stages.push(stage);
        break;
      }
      case 'ENV':
        for (const [, k, v] of rest.matchAll(/(\w+)=("[^"]*"|\S+)/g)) stage.steps.push({ op: 'ENV', k, v: v.replace(/^"|"$/g, '') });
        break;
      case 'ENTRYPOINT':
      case 'CMD':
        stage[op.toLowerCase()] = JSON.parse(rest);
        break;
      case 'HEALTHCHECK':
        stage.healthcheck = JSON.parse(rest.replace(/^.*?CMD\s+/, ''));
        break;
      case 'USER':
      case 'EXPOSE':
        stage[op.toLowerCase()] = rest;
        break;
      case 'WORKDIR':
      case 'RUN':
      case 'COPY':
        stage.steps.push({ op: op.toUpperCase(), rest });
        break;
      default:
        fail(`instruction ${op} is not supported by this check; extend it`);
    }
  }
  return stages;
}

// ---- build context filtered by .dockerignore (last matching pattern wins; a pattern matching a parent
// directory applies to everything below it, as in the engine) ----
function contextFilter() {
  const file = path.join(root, '.dockerignore');
  const patterns = fs.existsSync(file)
    ? fs.readFileSync(file, 'utf8').split('\n').map((l) => l.trim()).filter((l) => l && !l.startsWith('#'))
    : [];
  const rules = patterns.map((p) => ({ negate: p.startsWith('!'), glob: p.replace(/^!/, '').replace(/\/+$/, '') }));
  // Docker's glob: `**` spans directories (and matches dot files), `*` and `?` stay within one.
  const toRegex = (glob) =>
    new RegExp(
      `^${glob
        .split(/(\*\*\/|\*\*|\*|\?)/)
        .map((t) => ({ '**/': '(?:.*/)?', '**': '.*', '*': '[^/]*', '?': '[^/]' })[t] ?? t.replace(/[.+^${}()|[\]\\]/g, '\\$&'))
        .join('')}$`,
    );
  for (const r of rules) r.re = toRegex(r.glob);
  const matches = (rel, re) => {
    const parts = rel.split('/');
    for (let i = parts.length; i > 0; i--) if (re.test(parts.slice(0, i).join('/'))) return true;
    return false;
  };
  return (rel) => {
    let included = true;
    for (const r of rules) if (matches(rel, r.re)) included = r.negate;
    return included;
  };
}

function copyContext(dest) {
  const included = contextFilter();
  const negations = fs.readFileSync(path.join(root, '.dockerignore'), 'utf8').split('\n').filter((l) => l.startsWith('!'));
  let files = 0;
  const walk = (rel) => {
    for (const entry of fs.readdirSync(path.join(root, rel), { withFileTypes: true })) {
      const r = rel ? `${rel}/${entry.name}` : entry.name;
      if (entry.isDirectory()) {
        // Skip whole trees nothing re-includes (node_modules, .git) instead of walking them.
        if (!included(r) && !negations.some((n) => n.slice(1).startsWith(r))) continue;
        walk(r);
      } else if (entry.isFile() && included(r)) {
        fs.mkdirSync(path.join(dest, rel), { recursive: true });
        fs.copyFileSync(path.join(root, r), path.join(dest, r));
        files++;
      }
    }
  };
  walk('');
  return files;
}

// ---- the Node.js binary of the FROM image's major version ----
function nodeFor(image) {
  const major = /^node:(\d+)/.exec(image)?.[1] ?? fail(`FROM ${image}: not a node image`);
  if (process.versions.node.split('.')[0] === major) return process.execPath;
  const r = spawnSync('npx', ['-y', `node@${major}`, '-p', 'process.execPath'], { encoding: 'utf8' });
  if (r.status !== 0) fail(`could not get Node.js ${major} (npx node@${major}): ${r.stderr}`);
  return r.stdout.trim();
}

function freePort() {
  return new Promise((resolve) => {
    const s = net.createServer().listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

// ---- build ----
const stages = parseDockerfile(fs.readFileSync(dockerfile, 'utf8'));
// In memory when possible: the stages hold three node_modules trees, and deleting them from a busy disk
// took minutes, longer than building them.
const scratch = process.env.IMAGE_CHECK_TMPDIR ?? (fs.existsSync('/dev/shm') ? '/dev/shm' : os.tmpdir());
work = fs.mkdtempSync(path.join(scratch, 'plinth-image-'));
fs.chmodSync(work, 0o755);
const context = path.join(work, 'context');
console.log(`image check in ${work}`);
await timed('context (.dockerignore)', () => copyContext(context));
const leaked = ['node_modules', '.git', 'dist', '.plinth'].filter((d) => fs.existsSync(path.join(context, d)));
if (leaked.length) fail(`the build context carries ${leaked.join(', ')}`);

const fsRoot = (stage) => path.join(work, 'stages', stage.name);
const byName = new Map(stages.map((s) => [s.name, s]));
for (const stage of stages) {
  const rootDir = fsRoot(stage);
  fs.mkdirSync(rootDir, { recursive: true });
  const nodeBin = await timed(`node for ${stage.image}`, () => nodeFor(stage.image));
  stage.node = nodeBin;
  const at = (p) => path.join(rootDir, path.posix.resolve(stage.workdir, p));
  await timed(`stage ${stage.name}`, async () => {
    for (const step of stage.steps) {
      if (step.op === 'ENV') stage.env[step.k] = step.v;
      else if (step.op === 'WORKDIR') {
        stage.workdir = path.posix.resolve(stage.workdir, step.rest);
        fs.mkdirSync(at('.'), { recursive: true });
      } else if (step.op === 'COPY') {
        const words = step.rest.split(/\s+/);
        const from = words[0].startsWith('--from=') ? byName.get(words.shift().slice(7)) : undefined;
        const dest = words.pop();
        for (const src of words) {
          const source = from ? path.join(fsRoot(from), path.posix.resolve(from.workdir, src)) : path.join(context, src);
          if (!fs.existsSync(source)) fail(`COPY ${step.rest}: ${src} is not in the ${from ? `${from.name} stage` : 'build context'}`);
          const target = dest.endsWith('/') && !fs.statSync(source).isDirectory() ? path.join(at(dest), path.basename(src)) : at(dest);
          fs.mkdirSync(path.dirname(target), { recursive: true });
          fs.cpSync(source, target, { recursive: true, verbatimSymlinks: true });
        }
      } else if (step.op === 'RUN') {
        const t0 = performance.now();
        const r = spawnSync('sh', ['-c', step.rest], {
          cwd: at('.'),
          stdio: ['ignore', 'pipe', 'pipe'],
          // The npm cache stands in for the engine's layer cache; nothing else from this machine leaks in.
          env: { ...process.env, ...stage.env, PATH: `${path.dirname(nodeBin)}:${process.env.PATH}`, npm_config_prefer_offline: 'true' },
          encoding: 'utf8',
        });
        if (r.status !== 0) fail(`RUN ${step.rest} (stage ${stage.name}) exited ${r.status}:\n${r.stdout}\n${r.stderr}`);
        console.log(`    RUN ${step.rest}: ${((performance.now() - t0) / 1000).toFixed(1)} s`);
      }
    }
  });
}

// ---- run the final stage ----
const final = stages.at(-1);
const app = path.join(fsRoot(final), final.workdir);
if (!final.user || !/^\d+(:\d+)?$/.test(final.user)) fail(`USER must be numeric (runAsNonRoot checks it), got ${final.user}`);
if (final.user.startsWith('0')) fail('USER must not be root');
if (!final.healthcheck) fail('no HEALTHCHECK');
const [uid, gid] = final.user.split(':').map(Number);
// The image's own node binary, inside its root, readable by the numeric user.
const nodeInImage = path.join(fsRoot(final), 'usr/local/bin/node');
fs.mkdirSync(path.dirname(nodeInImage), { recursive: true });
fs.copyFileSync(final.node, nodeInImage);
await timed('read-only final stage', () => execFileSync('chmod', ['-R', 'a-w,a+rX', fsRoot(final)]));
const tmp = fs.mkdtempSync(path.join(work, 'tmp-'));
fs.chmodSync(tmp, 0o1777);
const asRoot = process.getuid?.() === 0;
const dbName = `plinth_image_${randomBytes(4).toString('hex')}`;
const admin = new pg.Client({ connectionString: baseUrl });
await admin.connect();
await admin.query(`create database ${dbName}`);
const dbUrl = new URL(baseUrl);
dbUrl.pathname = `/${dbName}`;

const exe = (argv) => (argv[0] === 'node' ? [nodeInImage, ...argv.slice(1)] : argv);
function container(cmd, extraEnv) {
  const argv = exe([...final.entrypoint, ...cmd]);
  return spawn(argv[0], argv.slice(1), {
    cwd: app,
    ...(asRoot ? { uid, gid } : {}),
    env: {
      ...final.env,
      PATH: `${path.dirname(nodeInImage)}:/usr/bin:/bin`,
      HOME: app, // read-only, like the image's home for a numeric user
      TMPDIR: tmp,
      DATABASE_URL: dbUrl.toString(),
      REDIS_URL: redisUrl,
      REDIS_PREFIX: `plinth-image:${dbName}:`,
      WEBHOOK_SECRET_KEY: randomBytes(32).toString('base64'),
      SHUTDOWN_DELAY_MS: '0',
      ...extraEnv,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
}
function healthcheck(env) {
  const argv = exe(final.healthcheck);
  return spawnSync(argv[0], argv.slice(1), { cwd: app, ...(asRoot ? { uid, gid } : {}), env: { ...final.env, TMPDIR: tmp, ...env }, timeout: 5_000 }).status;
}
function exited(child) {
  return new Promise((resolve) => (child.exitCode !== null ? resolve(child.exitCode) : child.once('exit', (c) => resolve(c))));
}
const output = (child) => {
  let text = '';
  child.stdout.on('data', (d) => (text += d));
  child.stderr.on('data', (d) => (text += d));
  return () => text;
};
function rssKb(pid) {
  return Number(/VmRSS:\s+(\d+)/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? 0);
}

let failed;
try {
  await timed('migrate (ENTRYPOINT migrate)', async () => {
    const c = container(['migrate']);
    const out = output(c);
    const code = await exited(c);
    if (code !== 0) throw new Error(`migrate exited ${code}:\n${out()}`);
  });
  const port = await freePort();
  const api = container(final.cmd, { PORT: String(port), HOST: '127.0.0.1', PLINTH_ROLE: 'api', MIGRATE_ON_START: 'false' });
  const apiOut = output(api);
  await timed('api start → /readyz 200', async () => {
    const deadline = Date.now() + 30_000;
    for (;;) {
      if (api.exitCode !== null) throw new Error(`api exited ${api.exitCode}:\n${apiOut()}`);
      const ok = await fetch(`http://127.0.0.1:${port}/readyz`).then((r) => r.status === 200, () => false);
      if (ok) break;
      if (Date.now() > deadline) throw new Error(`api not ready in 30 s:\n${apiOut()}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  });
  const signup = await fetch(`http://127.0.0.1:${port}/v1/auth/signup`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ email: `image-${dbName}@example.com`, password: 'image check password 1', name: 'Image', organizationName: 'Image check' }),
  });
  console.log(`  POST /v1/auth/signup: ${signup.status}`);
  if (signup.status !== 201) throw new Error(`signup answered ${signup.status}: ${await signup.text()}`);
  console.log(`  api RSS after start + one request: ${(rssKb(api.pid) / 1024).toFixed(0)} MB`);
  const hc = healthcheck({ PORT: String(port) });
  console.log(`  HEALTHCHECK (api): exit ${hc}`);
  if (hc !== 0) throw new Error('HEALTHCHECK failed against the running API');
  api.kill('SIGTERM');
  const apiCode = await exited(api);
  console.log(`  api after SIGTERM: exit ${apiCode}`);
  if (apiCode !== 0) throw new Error(`api exit ${apiCode} after SIGTERM:\n${apiOut()}`);
  if (/EACCES|EROFS/.test(apiOut())) throw new Error(`the API tried to write outside TMPDIR:\n${apiOut()}`);

  const metricsPort = await freePort();
  const worker = container(['worker'], { METRICS_PORT: String(metricsPort), HOST: '127.0.0.1', MIGRATE_ON_START: 'false' });
  const workerOut = output(worker);
  await timed('worker start → HEALTHCHECK 0', async () => {
    const deadline = Date.now() + 30_000;
    while (healthcheck({ METRICS_PORT: String(metricsPort) }) !== 0) {
      if (worker.exitCode !== null || Date.now() > deadline) throw new Error(`worker not healthy:\n${workerOut()}`);
      await new Promise((r) => setTimeout(r, 200));
    }
  });
  worker.kill('SIGTERM');
  const workerCode = await exited(worker);
  if (workerCode !== 0) throw new Error(`worker exit ${workerCode} after SIGTERM:\n${workerOut()}`);
} catch (err) {
  failed = err;
} finally {
  await admin.query(`drop database if exists ${dbName} with (force)`).catch(() => undefined);
  await admin.end();
  if (!keep) {
    if (!asRoot) execFileSync('chmod', ['-R', 'u+w', work]);
    await timed('cleanup', () => execFileSync('rm', ['-rf', work]));
  }
}
if (failed) fail(failed.message);
console.log(`image check passed (${final.image}, USER ${final.user}, read-only app files, writable TMPDIR only)`);
console.log(`timings: ${timings.map(([l, s]) => `${l} ${s.toFixed(1)}s`).join('; ')}`);
