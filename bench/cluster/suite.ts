/**
 * The fault suite (#18 "A lasting net"): `npm run faults [-- --quick] [--only NAME,…] [--keep] [--out DIR]`.
 *
 * Brings the local cluster up (bench/cluster/cluster.ts: HAProxy, 2 API, 1 worker, Postgres primary +
 * replica, Redis, all on loopback) unless one is already running, runs every scenario of
 * suite-scenarios.ts bounded in time, prints each invariant (must be 0) and the figures measured, writes
 * `<out>/faults-<timestamp>.json` (default bench/results) and tears the cluster down again (also on
 * SIGINT/SIGTERM) unless it was already running or --keep is given. Exit code 1 when any invariant is not 0
 * or a scenario could not run to the end.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import pg from 'pg';
import { connectApi, createProject, signup } from '../lib/api.ts';
import { ROOT } from '../lib/processes.ts';
import { down, killStartedProcesses, pidAlive, plinthEnv, readState, spawnPlinth, startApi, stopStartingProcesses, up, writeState, type ClusterState } from './cluster.ts';
import { SCENARIOS } from './suite-scenarios.ts';
import { createProbeTables, round1, type ScenarioResult, type SuiteContext } from './suite-lib.ts';

function arg(argv: string[], name: string): string | undefined {
  const i = argv.indexOf(name);
  return i >= 0 ? argv[i + 1] : undefined;
}

const load = () => os.loadavg().map((l) => round1(l)).join(' ');

/** An instance that died by itself between scenarios is a finding: recorded, and started again. */
async function healCluster(state: ClusterState): Promise<string[]> {
  const dead: string[] = [];
  for (const [i, a] of state.apis.entries()) {
    if (pidAlive(a.pid)) continue;
    dead.push(a.name);
    state.apis[i] = await startApi(state, i);
  }
  for (const [i, w] of state.workers.entries()) {
    if (pidAlive(w.pid)) continue;
    dead.push(w.name);
    state.workers[i] = { name: w.name, pid: spawnPlinth(w.name, ['worker'], plinthEnv(state)) };
  }
  writeState(state);
  return dead;
}

async function withDeadline<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const t = new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`${what} did not finish within ${ms / 1000} s`)), ms)));
  try {
    return await Promise.race([p, t]);
  } finally {
    clearTimeout(timer);
  }
}

export async function runSuite(argv: string[]): Promise<number> {
  const quick = argv.includes('--quick');
  const only = arg(argv, '--only')?.split(',');
  const unknown = only?.filter((n) => !SCENARIOS.some((s) => s.name === n)) ?? [];
  if (unknown.length > 0) {
    console.error(`unknown scenario(s): ${unknown.join(', ')}; known: ${SCENARIOS.map((s) => s.name).join(', ')}`);
    return 2;
  }
  const outDir = path.resolve(ROOT, arg(argv, '--out') ?? 'bench/results');
  const startedAt = new Date();
  const loadBefore = load();
  let state = readState();
  const startedHere = !state || !pidAlive(state.haproxyPid);
  let tornDown = false;
  const teardown = async () => {
    if (tornDown || !startedHere || argv.includes('--keep')) return;
    tornDown = true;
    stopStartingProcesses();
    await down();
    killStartedProcesses();
  };
  const onSignal = (sig: NodeJS.Signals) => {
    console.error(`\n${sig}: tearing the cluster down`);
    void teardown().finally(() => process.exit(130));
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);

  const results: ScenarioResult[] = [];
  fs.mkdirSync(outDir, { recursive: true });
  const file = path.join(outDir, `faults-${startedAt.toISOString().replace(/[:.]/g, '-')}.json`);
  const failing = () => results.filter((r) => r.status !== 'ok' || r.invariants.some((i) => i.value !== 0));
  // Rewritten after every scenario, so a run stopped half-way (timeout, Ctrl-C) still leaves what it measured.
  const save = (finished: boolean) => {
    const report = {
      startedAt: startedAt.toISOString(),
      finishedAt: finished ? new Date().toISOString() : null,
      mode: quick ? 'quick' : 'long',
      machine: { cpus: os.cpus().length, loadAvgBefore: loadBefore, loadAvgAfter: load(), node: process.version },
      cluster: { apis: state?.apis.length ?? 0, workers: state?.workers.length ?? 0 },
      verdict: !finished ? 'incomplete' : failing().length === 0 ? 'pass' : 'fail',
      scenarios: results,
    };
    fs.writeFileSync(file, `${JSON.stringify(report, null, 1)}\n`);
    return report;
  };
  let pool: pg.Pool | undefined;
  try {
    if (startedHere) state = await up({ apis: 2, workers: 1 });
    if (!state!.workerRole || state!.workers.length === 0) throw new Error('the fault suite needs the worker role (plinth worker)');
    await healCluster(state!);
    pool = new pg.Pool({ connectionString: state!.databaseUrl, max: 6 });
    await createProbeTables(pool);
    const api = await connectApi(state!.lbUrl);
    const tenant = await signup(api, 'faults');
    const projectId = await createProject(api, tenant, 'Faults');
    const run = `${Date.now().toString(36)}${Math.random().toString(36).slice(2, 6)}`;
    const ctx: SuiteContext = { state: state!, quick, pg: pool, run, tenant, projectId, log: (m) => console.log(`  ${m}`) };
    for (const s of SCENARIOS.filter((x) => !only || only.includes(x.name))) {
      console.log(`\n▶ ${s.name} (${quick ? 'quick' : 'long'}): ${s.what}`);
      const t0 = Date.now();
      let r: ScenarioResult;
      try {
        const out = await withDeadline(s.run(ctx), quick ? 150_000 : 420_000, s.name);
        r = { scenario: s.name, status: 'ok', durationSec: round1((Date.now() - t0) / 1000), ...out };
      } catch (err) {
        r = { scenario: s.name, status: 'error', reason: (err as Error).message.slice(0, 400), durationSec: round1((Date.now() - t0) / 1000), invariants: [], figures: {} };
      }
      const crashed = await healCluster(ctx.state);
      if (crashed.length > 0) r.figures.crashedAndRestarted = crashed.join(' ');
      results.push(r);
      save(false);
      for (const inv of r.invariants) console.log(`  ${inv.value === 0 ? 'ok  ' : 'FAIL'} ${inv.id} = ${inv.value}  (${inv.description})`);
      console.log(`  ${r.status}${r.reason ? `: ${r.reason}` : ''}, ${r.durationSec} s; ${Object.entries(r.figures).map(([k, v]) => `${k}=${v}`).join(', ')}`);
    }
  } catch (err) {
    results.push({ scenario: 'setup', status: 'error', reason: (err as Error).message.slice(0, 400), durationSec: 0, invariants: [], figures: {} });
    console.error(`setup failed: ${(err as Error).message}`);
  } finally {
    await pool?.end().catch(() => undefined);
    await teardown();
  }

  const report = save(true);
  const failed = failing();

  console.log(`\n| scenario | invariant | value | seconds |\n|---|---|---|---|`);
  for (const r of results) {
    if (r.status !== 'ok') console.log(`| \`${r.scenario}\` | could not run: ${r.reason} | — | ${r.durationSec} |`);
    for (const i of r.invariants) console.log(`| \`${r.scenario}\` | ${i.id} | ${i.value} | ${r.durationSec} |`);
  }
  console.log(`\nload average ${loadBefore} → ${report.machine.loadAvgAfter}; wrote ${path.relative(process.cwd(), file)}`);
  console.log(failed.length === 0 ? 'fault suite: every invariant is 0' : `fault suite FAILED: ${failed.map((r) => r.scenario).join(', ')}`);
  return failed.length === 0 ? 0 : 1;
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  runSuite(process.argv.slice(2)).then(
    (code) => process.exit(code),
    (err) => {
      console.error((err as Error).stack ?? err);
      process.exit(1);
    },
  );
}
