/**
 * The rolling-deploy drill (#21): `npm run drill:deploy [-- --quick] [--out DIR]`.
 *
 * On the local cluster (cluster.ts: HAProxy → 2 API, 2 workers, Postgres primary + replica, Redis), started
 * here on the PREVIOUS release (deploy/releases.json, rebuilt into a temp dir with compat-check's
 * buildPrevious), under steady read + write load through HAProxy (drill-load.ts):
 *
 *   1. baseline on the previous release;
 *   2. this release's migrations (expand steps) run while the previous release serves;
 *   3. a deliberately bad canary (this release + DRILL_FAIL_RATE 500s, drill-canary-api.ts) gets a small
 *      share through HAProxy weights (runtime API); the drill must abort it automatically;
 *   4. a good canary (this release, `plinth start`) gets the same share and must pass;
 *   5. API instances replaced one by one (SIGTERM: readiness drain, HAProxy /readyz checks), then workers;
 *   6. rollback: the previous release again, one by one;
 *   7. the load stops; the database is checked: acknowledged writes present, no key with two tasks, every
 *      outbox event of the drill's tenant delivered to every consumer declared for it.
 *
 * Reports per step p50/p99 and failed attempts, final client failures (a retried-then-acknowledged request is
 * not one), lost/duplicated writes and lost jobs, to <out>/deploy-drill-<timestamp>.json. Self-stopping: the
 * cluster is torn down at the end, on a deadline (5.5 min; quick 5 min; teardown after it) and on SIGINT/SIGTERM. Exit 1 when an
 * invariant is not 0 or a canary verdict is not the expected one.
 */
import { execFileSync, spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import pg from 'pg';
import { buildPrevious } from '../../scripts/compat-check.ts';
import { connectApi, createProject, signup } from '../lib/api.ts';
import { ROOT, sleep, waitHttp } from '../lib/processes.ts';
import {
  down, killStartedProcesses, pidAlive, plinthEnv, PORTS, readState, RUN, spawnPlinth, startApi, stopStartingProcesses, trackProcess, up, writeState,
  type ClusterState,
} from './cluster.ts';
import { figures, judgeCanary, startLoad, type Load, type Sample, type WindowFigures } from './drill-load.ts';
import { count, round1, verifyWrites } from './suite-lib.ts';

type Version = 'previous' | 'current' | 'bad-canary';

const CANARY = { name: 'api-canary', port: PORTS.apiBase + 2 };
/** Abort when the canary's error rate exceeds the others' by more than this (absolute), or its p99 exceeds theirs × factor + slack. */
export const CANARY_POLICY = { weightOthers: 100, weightCanary: 20, errorRateMargin: 0.02, p99Factor: 2, p99SlackMs: 150, badFailRate: 0.3 };

interface StepResult extends WindowFigures {
  step: string;
  durationSec: number;
  finalFailures: number;
  /** which version answered how many requests in this step */
  byVersion: Record<string, number>;
  /** failed attempts by `status server` (status 0: no answer) */
  failedBy: Record<string, number>;
  /** most (event, consumer) deliveries of the drill's tenant not yet done, sampled every second: the jobs in flight */
  maxJobBacklog: number;
  detail?: string;
}

interface CanaryResult {
  canary: 'bad' | 'good';
  verdict: 'pass' | 'abort';
  expected: 'pass' | 'abort';
  reason: string;
  windowSec: number;
  canaryFigures: WindowFigures;
  othersFigures: WindowFigures;
}

// ── HAProxy runtime API (stats socket) ─────────────────────────────────────────────────────────────────

function haproxy(command: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const sock = net.createConnection(path.join(RUN, 'haproxy.sock'));
    let out = '';
    sock.on('data', (d) => (out += d));
    sock.on('end', () => resolve(out));
    sock.on('error', reject);
    sock.write(`${command}\n`);
  });
}

async function serverStatus(name: string): Promise<string> {
  const csv = (await haproxy('show stat')).split('\n');
  const header = csv[0]!.replace(/^# /, '').split(',');
  const row = csv.map((l) => l.split(',')).find((r) => r[0] === 'apis' && r[1] === name);
  return row?.[header.indexOf('status')] ?? 'unknown';
}

async function waitServerUp(name: string, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let status = '';
  while (Date.now() < deadline) {
    status = await serverStatus(name);
    if (status === 'UP') return;
    await sleep(200);
  }
  throw new Error(`HAProxy did not mark ${name} UP within ${timeoutMs / 1000} s (status ${status})`);
}

// ── processes ──────────────────────────────────────────────────────────────────────────────────────────

async function terminate(pid: number, timeoutMs = 25_000): Promise<void> {
  if (!pidAlive(pid)) return;
  process.kill(pid, 'SIGTERM');
  const deadline = Date.now() + timeoutMs;
  while (pidAlive(pid) && Date.now() < deadline) await sleep(100);
  if (pidAlive(pid)) process.kill(pid, 'SIGKILL');
}

/** A process beside the cluster (recorded in state.extras so `cluster.ts down` stops it too). */
function spawnExtra(state: ClusterState, name: string, args: string[], env: Record<string, string>, root: string): number {
  const out = fs.openSync(path.join(RUN, `${name}.log`), 'a');
  const p = spawn(process.execPath, ['--import', 'tsx', ...args], { cwd: root, detached: true, stdio: ['ignore', out, out], env: { ...process.env, ...env } });
  p.unref();
  trackProcess(p.pid!);
  state.extras = [...(state.extras ?? []).filter((e) => pidAlive(e.pid)), { name, pid: p.pid! }];
  writeState(state);
  return p.pid!;
}

function runToEnd(root: string, args: string[], env: Record<string, string>, timeoutMs: number): Promise<{ code: number; output: string }> {
  return new Promise((resolve) => {
    const p = spawn(process.execPath, ['--import', 'tsx', 'src/cli.ts', ...args], { cwd: root, env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    p.stdout.on('data', (d) => (output += d));
    p.stderr.on('data', (d) => (output += d));
    const t = setTimeout(() => p.kill('SIGKILL'), timeoutMs);
    p.on('exit', (code) => {
      clearTimeout(t);
      resolve({ code: code ?? 1, output });
    });
  });
}

async function dbNow(db: pg.Pool): Promise<Date> {
  const { rows } = await db.query<{ now: Date }>('select now()');
  return rows[0]!.now;
}

// ── the drill ──────────────────────────────────────────────────────────────────────────────────────────

export async function runDrill(argv: string[]): Promise<number> {
  const quick = argv.includes('--quick');
  const outIdx = argv.indexOf('--out');
  const outDir = path.resolve(ROOT, outIdx >= 0 ? argv[outIdx + 1]! : 'bench/results');
  const budgetMs = quick ? 300_000 : 330_000;
  const t = {
    baselineMs: quick ? 5_000 : 12_000,
    holdMs: quick ? 4_000 : 10_000,
    canaryWindowMs: quick ? 12_000 : 25_000,
    canaryMaxWindowMs: quick ? 30_000 : 50_000,
    canaryMinSamples: quick ? 25 : 50,
    writers: quick ? 3 : 4,
    readers: quick ? 3 : 4,
  };
  const startedAt = new Date();
  const load1 = () => os.loadavg().map((l) => round1(l)).join(' ');
  const loadBefore = load1();
  const { previous } = JSON.parse(fs.readFileSync(path.join(ROOT, 'deploy/releases.json'), 'utf8')) as { previous: { version: string; commit: string } };
  const log = (m: string) => console.log(`[${round1((Date.now() - startedAt.getTime()) / 1000)}s] ${m}`);

  if (readState() && pidAlive(readState()!.haproxyPid)) {
    console.error('a local cluster is already running (npx tsx bench/cluster/cluster.ts down first): the drill starts its own on the previous release');
    return 2;
  }
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'plinth-drill-'));
  let state: ClusterState | undefined;
  let pool: pg.Pool | undefined;
  let load: Load | undefined;
  let tornDown = false;
  const teardown = async () => {
    if (tornDown) return;
    tornDown = true;
    stopStartingProcesses();
    await down().catch((err) => console.error(`down: ${(err as Error).message}`));
    killStartedProcesses();
    fs.rmSync(tmp, { recursive: true, force: true });
  };
  const onSignal = (sig: NodeJS.Signals) => {
    console.error(`\n${sig}: tearing the cluster down`);
    void teardown().finally(() => process.exit(130));
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);

  const steps: StepResult[] = [];
  const canaries: CanaryResult[] = [];
  const invariants: { id: string; description: string; value: number }[] = [];
  const extra: Record<string, number | string> = {};
  let error: string | undefined;
  const versionOf: Record<string, Version> = {};
  // A sample's version: the version of the process behind that HAProxy server when the answer came back.
  const tagged: (Sample & { version: string })[] = [];
  let tagFrom = 0;
  const tag = () => {
    if (!load) return;
    for (; tagFrom < load.samples.length; tagFrom++) {
      const s = load.samples[tagFrom]!;
      tagged.push({ ...s, version: versionOf[s.server] ?? s.server });
    }
  };
  const tagTimer = setInterval(tag, 50);
  const backlog: { at: number; n: number }[] = [];
  let backlogTimer: NodeJS.Timeout | undefined;

  const step = async (name: string, fn: () => Promise<unknown>) => {
    const t0 = Date.now();
    log(`▶ ${name}`);
    const out = await fn();
    const detail = typeof out === 'string' ? out : undefined;
    tag();
    const t1 = Date.now();
    const inWindow = tagged.filter((s) => s.at >= t0 && s.at < t1);
    const byVersion: Record<string, number> = {};
    const failedBy: Record<string, number> = {};
    for (const s of inWindow) {
      byVersion[s.version] = (byVersion[s.version] ?? 0) + 1;
      if (!s.ok) failedBy[`${s.status} ${s.server}`] = (failedBy[`${s.status} ${s.server}`] ?? 0) + 1;
    }
    const maxJobBacklog = Math.max(0, ...backlog.filter((b) => b.at >= t0 && b.at < t1).map((b) => b.n));
    const r: StepResult = {
      step: name, durationSec: round1((t1 - t0) / 1000), ...figures(inWindow),
      finalFailures: load ? load.finalFailures.filter((f) => f.at >= t0 && f.at < t1).length : 0, byVersion, failedBy, maxJobBacklog, detail,
    };
    steps.push(r);
    log(`  ${r.requests} requests, p50 ${r.p50Ms} ms, p99 ${r.p99Ms} ms, failed attempts ${r.failedAttempts}, final failures ${r.finalFailures} ${JSON.stringify(failedBy)}, job backlog ≤ ${maxJobBacklog}; ${JSON.stringify(byVersion)}${detail ? `; ${detail}` : ''}`);
  };

  const body = async () => {
    log(`building the previous release ${previous.version} (${previous.commit.slice(0, 8)}) into ${tmp}`);
    // Same runtime dependencies: link this checkout's node_modules instead of a full `npm ci` (compat-check's switch).
    const deps = (pkg: string) => JSON.stringify((JSON.parse(pkg) as { dependencies?: unknown }).dependencies);
    const prevPkg = execFileSync('git', ['show', `${previous.commit}:package.json`], { cwd: ROOT, encoding: 'utf8' });
    if (deps(prevPkg) === deps(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8'))) process.env.COMPAT_LINK_NODE_MODULES = '1';
    const prevRoot = buildPrevious(tmp, previous.commit);
    extra.previousNodeModules = process.env.COMPAT_LINK_NODE_MODULES === '1' ? 'linked (same runtime dependencies)' : 'npm ci';

    log('cluster up on the previous release (2 API, 2 workers, a disabled canary slot)');
    state = await up({ apis: 2, workers: 2, root: prevRoot, spares: [CANARY] });
    for (const a of state.apis) versionOf[a.name] = 'previous';
    pool = new pg.Pool({ connectionString: state.databaseUrl, max: 4 });
    const api = await connectApi(state.lbUrl);
    const tenant = await signup(api, 'drill');
    const projectId = await createProject(api, tenant, 'Drill');
    const marker = `dd${Date.now().toString(36)}`;
    for (const s of [...state.apis.map((a) => a.name), CANARY.name]) await haproxy(`set weight apis/${s} ${s === CANARY.name ? CANARY_POLICY.weightCanary : CANARY_POLICY.weightOthers}`);
    const st = state;
    const db = pool;
    // Lost jobs: an acknowledged task with no task_created event, or an event of the drill's tenant not
    // delivered ('done') to every consumer declared for its name (whichever worker version declared it).
    const undelivered = () => count(db,
      `select count(*)::int as n from outbox o join job_consumers c on c.event_name = o.name
         left join job_deliveries d on d.event_id = o.id and d.consumer = c.consumer
        where (o.tenant_id = $1 or (o.tenant_id is null and o.payload->>'tenantId' = $1::text)) and d.status is distinct from 'done'`, [tenant.orgId]);
    let sampling = false;
    backlogTimer = setInterval(() => {
      if (sampling) return;
      sampling = true;
      void undelivered().then((n) => backlog.push({ at: Date.now(), n }), () => undefined).finally(() => (sampling = false));
    }, 1_000);
    load = startLoad({ lbUrl: state.lbUrl, tenant, projectId, writers: t.writers, readers: t.readers, marker });

    await step('baseline (previous release)', () => sleep(t.baselineMs));

    await step('migrate (this release\'s expand migrations, previous release serving)', async () => {
      const before = await count(db, 'select count(*)::int as n from plinth_migrations');
      const m = await runToEnd(ROOT, ['migrate'], plinthEnv(st), 120_000);
      if (m.code !== 0) throw new Error(`migration failed: ${m.output.slice(-800)}`);
      const after = await count(db, 'select count(*)::int as n from plinth_migrations');
      extra.migrationsApplied = after - before;
      return `${after - before} migrations applied`;
    });

    const canaryRun = async (kind: 'bad' | 'good'): Promise<string> => {
      const env = { ...plinthEnv(st), PORT: String(CANARY.port), PLINTH_ROLE: 'api' };
      const pid = kind === 'bad'
        ? spawnExtra(st, 'api-canary-bad', ['bench/cluster/drill-canary-api.ts'], { ...env, DRILL_FAIL_RATE: String(CANARY_POLICY.badFailRate) }, ROOT)
        : spawnPlinth('api-canary', ['start'], env, ROOT);
      if (kind === 'good') {
        st.extras = [...(st.extras ?? []), { name: 'api-canary', pid }];
        writeState(st);
      }
      try {
        await waitHttp(`http://127.0.0.1:${CANARY.port}/readyz`, 90_000, () => pidAlive(pid));
        // Warm-up outside the rotation (a fresh process's first requests compile code paths).
        for (let i = 0; i < 10; i++) await fetch(`http://127.0.0.1:${CANARY.port}/v1/orgs/${tenant.orgId}/projects/${projectId}/tasks`, { headers: { authorization: `Bearer ${tenant.token}` } }).then((r) => r.text()).catch(() => '');
        versionOf[CANARY.name] = kind === 'bad' ? 'bad-canary' : 'current';
        await haproxy(`set server apis/${CANARY.name} state ready`);
        await waitServerUp(CANARY.name);
        const w0 = Date.now();
        let verdict: CanaryResult['verdict'] | undefined;
        let reason = '';
        let c: WindowFigures = figures([]);
        let o: WindowFigures = figures([]);
        while (!verdict) {
          await sleep(1_000);
          tag();
          const win = tagged.filter((s) => s.at >= w0);
          c = figures(win.filter((s) => s.server === CANARY.name));
          o = figures(win.filter((s) => s.server !== CANARY.name && st.apis.some((a) => a.name === s.server)));
          const j = judgeCanary(c, o, Date.now() - w0, { ...CANARY_POLICY, windowMs: t.canaryWindowMs, maxWindowMs: t.canaryMaxWindowMs, minSamples: t.canaryMinSamples });
          verdict = j?.verdict;
          reason = j?.reason ?? '';
        }
        canaries.push({ canary: kind, verdict, expected: kind === 'bad' ? 'abort' : 'pass', reason, windowSec: round1((Date.now() - w0) / 1000), canaryFigures: c, othersFigures: o });
        return `${verdict === 'abort' ? 'ABORTED' : 'passed'}: ${reason}`;
      } finally {
        // Either way the canary leaves the rotation: after an abort that is the rollback; after a pass the
        // roll below replaces the fleet instance by instance.
        await haproxy(`set server apis/${CANARY.name} state maint`);
        await sleep(300);
        await terminate(pid);
        delete versionOf[CANARY.name];
      }
    };
    await step(`canary: bad (this release answering 500 on ${CANARY_POLICY.badFailRate * 100} % of API calls), weight ${CANARY_POLICY.weightCanary}/${CANARY_POLICY.weightOthers * 2 + CANARY_POLICY.weightCanary}`, () => canaryRun('bad'));
    await step('canary: this release', () => canaryRun('good'));

    const replaceApi = async (i: number, root: string, version: Version) => {
      const a = st.apis[i]!;
      await terminate(a.pid);
      st.apis[i] = await startApi(st, i, root);
      versionOf[a.name] = version;
      writeState(st);
      await waitServerUp(a.name);
    };
    const replaceWorker = async (i: number, root: string) => {
      const w = st.workers[i]!;
      await terminate(w.pid);
      const since = await dbNow(db);
      st.workers[i] = { name: w.name, pid: spawnPlinth(w.name, ['worker'], plinthEnv(st), root) };
      writeState(st);
      // A worker declares its consumers when it starts (job_consumers.last_seen_at): its readiness signal.
      const deadline = Date.now() + 90_000;
      while ((await count(db, 'select count(*)::int as n from job_consumers where last_seen_at >= $1', [since])) === 0) {
        if (!pidAlive(st.workers[i]!.pid)) throw new Error(`${w.name} exited at start (bench/cluster/run/${w.name}.log)`);
        if (Date.now() > deadline) throw new Error(`${w.name} did not declare its consumers within 90 s`);
        await sleep(250);
      }
    };
    for (let i = 0; i < st.apis.length; i++) await step(`roll: ${st.apis[i]!.name} → this release`, () => replaceApi(i, ROOT, 'current'));
    for (let i = 0; i < st.workers.length; i++) await step(`roll: ${st.workers[i]!.name} → this release`, () => replaceWorker(i, ROOT));
    await step('hold: all on this release', () => sleep(t.holdMs));
    for (let i = 0; i < st.apis.length; i++) await step(`rollback: ${st.apis[i]!.name} → previous release`, () => replaceApi(i, prevRoot, 'previous'));
    for (let i = 0; i < st.workers.length; i++) await step(`rollback: ${st.workers[i]!.name} → previous release`, () => replaceWorker(i, prevRoot));
    await step('hold: all on the previous release again', () => sleep(t.holdMs));

    log('stopping the load (writers finish the key in hand), checking the database');
    await load.stop();
    tag();
    const v = await verifyWrites(db, marker, load.writes);
    clearInterval(backlogTimer);
    const drainT0 = Date.now();
    let left = await undelivered();
    extra.jobBacklogWhenLoadStopped = left;
    while (left > 0 && Date.now() - drainT0 < 60_000) {
      await sleep(500);
      left = await undelivered();
    }
    const noEvent = await count(db,
      `select count(*)::int as n from unnest($1::uuid[]) as t(id)
        where not exists (select 1 from outbox o where o.tenant_id = $2 and o.name = 'projects.task_created' and o.payload->>'taskId' = t.id::text)`,
      [load.writes.acks.map((a) => a.id), tenant.orgId]);
    const deliveries = await count(db,
      `select count(*)::int as n from job_deliveries d join outbox o on o.id = d.event_id where o.tenant_id = $1 and d.status = 'done'`, [tenant.orgId]);
    const all = figures(tagged);
    invariants.push(
      { id: 'failed-client-requests', description: 'requests a client finally saw fail (a write key never acknowledged in 30 s, a read failing 5 attempts)', value: load.finalFailures.length },
      { id: 'keys-with-2+-resources', description: 'Idempotency-Keys that produced more than one task', value: v.keysWithDuplicates },
      { id: 'acknowledged-lost', description: 'acknowledged task ids missing from the database', value: v.acknowledgedLost },
      { id: 'lost-jobs', description: 'outbox events of the drill not delivered to every declared consumer (after up to 60 s), plus acknowledged tasks with no event', value: left + noEvent },
    );
    Object.assign(extra, {
      requests: all.requests, failedAttempts: all.failedAttempts, p50Ms: all.p50Ms, p99Ms: all.p99Ms,
      writesAcknowledged: load.writes.acks.length, writeAttempts: load.writes.attempts, tasksStored: v.stored, writeOutcomes: JSON.stringify(load.writes.byOutcome),
      eventDeliveriesDone: deliveries, drainSecAfterLoad: round1((Date.now() - drainT0) / 1000),
      finalFailureSamples: JSON.stringify(load.finalFailures.slice(0, 5)),
    });
  };

  let timer: NodeJS.Timeout | undefined;
  try {
    await Promise.race([
      body(),
      new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`the drill did not finish within ${budgetMs / 1000} s`)), budgetMs))),
    ]);
  } catch (err) {
    error = (err as Error).message.slice(0, 1000);
    console.error(`drill failed: ${error}`);
  } finally {
    clearTimeout(timer);
    clearInterval(tagTimer);
    clearInterval(backlogTimer);
    await load?.stop().catch(() => undefined);
    await pool?.end().catch(() => undefined);
    await teardown();
  }

  const canariesOk = canaries.length === 2 && canaries.every((c) => c.verdict === c.expected);
  const ok = !error && canariesOk && invariants.length > 0 && invariants.every((i) => i.value === 0);
  const report = {
    startedAt: startedAt.toISOString(),
    finishedAt: new Date().toISOString(),
    mode: quick ? 'quick' : 'full',
    machine: { cpus: os.cpus().length, loadAvgBefore: loadBefore, loadAvgAfter: load1(), node: process.version },
    releases: { previous, current: execGit(['rev-parse', 'HEAD']) },
    cluster: { apis: 2, workers: 2, canarySlot: CANARY.name, load: { writers: t.writers, readers: t.readers } },
    canaryPolicy: { ...CANARY_POLICY, windowSec: t.canaryWindowMs / 1000, maxWindowSec: t.canaryMaxWindowMs / 1000, minSamples: t.canaryMinSamples },
    verdict: ok ? 'pass' : 'fail',
    error,
    invariants,
    canaries,
    steps,
    figures: extra,
  };
  fs.mkdirSync(outDir, { recursive: true });
  const file = path.join(outDir, `deploy-drill-${startedAt.toISOString().replace(/[:.]/g, '-')}.json`);
  fs.writeFileSync(file, `${JSON.stringify(report, null, 1)}\n`);

  console.log('\n| step | s | requests | p50 ms | p99 ms | failed attempts | final failures |\n|---|---|---|---|---|---|---|');
  for (const s of steps) console.log(`| ${s.step} | ${s.durationSec} | ${s.requests} | ${s.p50Ms} | ${s.p99Ms} | ${s.failedAttempts} | ${s.finalFailures} |`);
  for (const c of canaries) console.log(`canary ${c.canary}: ${c.verdict} (expected ${c.expected}) — ${c.reason}`);
  for (const i of invariants) console.log(`${i.value === 0 ? 'ok  ' : 'FAIL'} ${i.id} = ${i.value}  (${i.description})`);
  console.log(`load average ${loadBefore} → ${report.machine.loadAvgAfter}; wrote ${path.relative(process.cwd(), file)}`);
  console.log(ok ? 'deploy drill: PASS' : 'deploy drill: FAIL');
  return ok ? 0 : 1;
}

function execGit(args: string[]): string {
  try {
    return execFileSync('git', args, { cwd: ROOT, encoding: 'utf8' }).trim();
  } catch {
    return 'unknown';
  }
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  runDrill(process.argv.slice(2)).then(
    (code) => process.exit(code),
    (err) => {
      console.error((err as Error).stack ?? err);
      process.exit(1);
    },
  );
}
