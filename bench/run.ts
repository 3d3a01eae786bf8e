/**
 * `npm run bench` / `plinth bench`: baselines and scenarios against a Plinth API started as its own
 * process on 127.0.0.1, over a throwaway database and a unique Redis prefix. Prints a table and writes
 * bench/results/<timestamp>.json and .html. Targets are reported (PASS/MISS), never enforced: the
 * exit code is 0 unless the harness itself broke.
 */
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { runBaseline } from './baselines/baselines.ts';
import { connectApi } from './lib/api.ts';
import { apiCommand, ensureCompiledBuild } from './lib/build.ts';
import { createBenchEnv } from './lib/env.ts';
import { freePort, ROOT, sampleRss, startNode, waitQuiet } from './lib/processes.ts';
import { renderHtml, renderTable, type BenchReport } from './lib/report.ts';
import { target, type BaselineName, type BenchContext, type BenchOptions, type Scenario, type ScenarioResult } from './lib/types.ts';
import { exportAtPeak, jobOverlap, outbox } from './scenarios/async.ts';
import { burst } from './scenarios/burst.ts';
import { listSearch } from './scenarios/lists.ts';
import { coldStart } from './scenarios/cold-start.ts';
import { cachedRead, hotEndpoint, uncachedRead } from './scenarios/reads.ts';
import { create, createHot, createOneOrg } from './scenarios/writes.ts';
import { usageIngest } from './scenarios/usage.ts';
import { invoiceRun } from './scenarios/invoicing.ts';
import { entitlementOverhead } from './scenarios/entitlements.ts';

export const SCENARIOS: Scenario[] = [
  cachedRead, entitlementOverhead, uncachedRead, create, createOneOrg, createHot, listSearch, burst, jobOverlap, hotEndpoint, outbox, exportAtPeak, usageIngest, invoiceRun, coldStart,
];

const USAGE = `usage: npm run bench -- [options]   (or: plinth bench [options])
  --scenario NAME[,NAME]  run only these (repeatable); names: ${SCENARIOS.map((s) => s.name).join(', ')}, baselines
  --duration SEC          seconds of load per measurement (default 5)
  --connections N         concurrent connections for closed-loop runs (default 50)
  --large                 also seed and measure 10^6 tasks for list-search (takes minutes)
  --single-process        one process runs both roles (as \`npm start\` does); the default is production's topology:
                          the API (PLINTH_ROLE=api) and the worker (PLINTH_ROLE=worker) as two processes
  --worker                the default (kept for older command lines)
  --no-baselines          skip baselines (ratios and P1-P3 become n/a)
  --api-env KEY=VALUE     extra environment for the API process (repeatable), e.g. rate-limit settings
  --api dist|tsx          run the API compiled from dist/ (default, as in production) or the sources via tsx
  --no-build              do not run \`npm run build\` first (dist/ must exist and be current)
  --cpu-prof DIR          run the API with node --cpu-prof into DIR (written when it stops); summarize with
                          npx tsx bench/lib/profile-summary.ts DIR/<file>.cpuprofile [--last SEC]
  --out DIR               where to write results (default bench/results)
  --list                  list scenarios and exit`;

export function parseBenchArgs(argv: string[]): (BenchOptions & { apiEnv: Record<string, string> }) | { help: true; list?: boolean } {
  const opts: BenchOptions & { apiEnv: Record<string, string> } = {
    scenarios: [], durationSec: 5, connections: 50, large: false, worker: true, baselines: true, outDir: path.join(ROOT, 'bench/results'), apiEnv: {},
    api: 'dist', build: true,
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const [flag, inline] = a.includes('=') && a.startsWith('--') ? [a.slice(0, a.indexOf('=')), a.slice(a.indexOf('=') + 1)] : [a, undefined];
    const value = () => {
      const v = inline ?? argv[++i];
      if (v === undefined) throw new Error(`${flag} needs a value`);
      return v;
    };
    const positive = (v: string) => {
      const n = Number(v);
      if (!Number.isInteger(n) || n < 1) throw new Error(`${flag} must be a positive integer (got "${v}")`);
      return n;
    };
    switch (flag) {
      case '--scenario': case '-s': opts.scenarios.push(...value().split(',').map((s) => s.trim()).filter(Boolean)); break;
      case '--duration': case '-d': opts.durationSec = positive(value()); break;
      case '--connections': case '-c': opts.connections = positive(value()); break;
      case '--large': opts.large = true; break;
      case '--worker': opts.worker = true; break;
      case '--single-process': opts.worker = false; break;
      case '--no-baselines': opts.baselines = false; break;
      case '--no-build': opts.build = false; break;
      case '--api': {
        const v = value();
        if (v !== 'dist' && v !== 'tsx') throw new Error(`--api must be dist or tsx (got "${v}")`);
        opts.api = v;
        break;
      }
      case '--out': opts.outDir = path.resolve(value()); break;
      case '--cpu-prof': opts.cpuProfDir = path.resolve(value()); break;
      case '--api-env': {
        const kv = value();
        const eq = kv.indexOf('=');
        if (eq < 1) throw new Error(`--api-env needs KEY=VALUE (got "${kv}")`);
        opts.apiEnv[kv.slice(0, eq)] = kv.slice(eq + 1);
        break;
      }
      case '--list': return { help: true, list: true };
      case '--help': case '-h': return { help: true };
      default: throw new Error(`unknown option ${a}`);
    }
  }
  const known = new Set([...SCENARIOS.map((s) => s.name), 'baselines']);
  for (const s of opts.scenarios) if (!known.has(s)) throw new Error(`unknown scenario "${s}" (known: ${[...known].join(', ')})`);
  return opts;
}

function machine(): BenchReport['machine'] {
  const load = os.loadavg().map((n) => Math.round(n * 100) / 100);
  const cpus = os.cpus();
  const busy = load[0]! > cpus.length * 0.5;
  return {
    cpus: cpus.length,
    cpuModel: cpus[0]?.model ?? 'unknown',
    memTotalGb: Math.round(os.totalmem() / 1024 ** 3),
    loadAvgAtStart: load,
    node: process.version,
    note: busy
      ? `Shared machine under other load at start (1-min load average ${load[0]} on ${cpus.length} CPUs): figures are noisy; ratios to baselines measured in the same run are more meaningful than absolute numbers.`
      : 'Load generator, API, baselines, Postgres and Redis all share this machine; ratios to baselines measured in the same run are more meaningful than absolute numbers.',
  };
}

export async function runBench(argv: string[]): Promise<number> {
  let parsed: ReturnType<typeof parseBenchArgs>;
  try {
    parsed = parseBenchArgs(argv);
  } catch (err) {
    console.error(`${(err as Error).message}\n${USAGE}`);
    return 2;
  }
  if ('help' in parsed) {
    console.log(parsed.list ? SCENARIOS.map((s) => `${s.name.padEnd(16)} ${s.title}`).join('\n') : USAGE);
    return 0;
  }
  const opts = parsed;
  const log = (m: string) => console.error(`[bench ${new Date().toISOString().slice(11, 19)}] ${m}`);
  const selected = opts.scenarios.length === 0 ? SCENARIOS : SCENARIOS.filter((s) => opts.scenarios.includes(s.name));
  const wanted = new Set<BaselineName>();
  if (opts.baselines) {
    for (const s of selected) if (s.baseline) wanted.add(s.baseline);
    if (opts.scenarios.length === 0 || opts.scenarios.includes('baselines')) ['hello', 'select', 'insert', 'pgbench'].forEach((b) => wanted.add(b as BaselineName));
  }
  const apiScenarios = selected.filter((s) => s.name !== 'baselines');
  const startsApi = apiScenarios.length > 0 && !(opts.scenarios.length === 1 && opts.scenarios[0] === 'baselines');
  // The API under test is the production build: compile first (or fail here, before anything is created).
  if (startsApi && opts.api === 'dist') {
    try {
      const { buildSec } = await ensureCompiledBuild({ build: opts.build, log });
      if (buildSec !== undefined) log(`built dist/ in ${buildSec} s`);
    } catch (err) {
      console.error(`bench: ${(err as Error).message}`);
      return 1;
    }
  }
  const startedAt = new Date();
  const mach = machine();
  const baselineRows = 10_000;
  log(`creating throwaway database and Redis prefix`);
  const env = await createBenchEnv({ baselineRows });
  let exitCode = 0;
  try {
    const baselines: BenchContext['baselines'] = {};
    // Each baseline is measured right before the first scenario compared with it, so a ratio's two
    // halves see the same background load on a shared machine; the rest run at the end.
    const measureBaseline = async (b: BaselineName) => {
      if (wanted.has(b) && !baselines[b]) baselines[b] = await runBaseline(b, { databaseUrl: env.databaseUrl, bench: opts, log, baselineRows });
    };
    const scenarios: ScenarioResult[] = [];
    let rssPeak = 0;
    let rssLast = 0;
    let workerRssPeak: number | undefined;
    let workerRssLast: number | undefined;
    let apiInfo: { runtime: 'dist' | 'tsx'; firstStartMs: number } | undefined;
    if (startsApi) {
      const apiEnv: Record<string, string> = {
        NODE_ENV: 'production', LOG_LEVEL: 'warn', DATABASE_URL: env.databaseUrl, REDIS_URL: env.redisUrl,
        REDIS_PREFIX: env.redisPrefix, SHUTDOWN_GRACE_MS: '5000',
        WEBHOOK_SECRET_KEY: randomBytes(32).toString('hex'),
        // One bench principal sends all the traffic: raise the per-principal/org/IP quotas so throughput
        // runs measure the pipeline (the limiter still runs on every request) instead of the 429 path.
        RATE_LIMIT_PRINCIPAL: '10000000', RATE_LIMIT_ORG: '10000000', RATE_LIMIT_IP: '10000000',
        // The throughput scenarios measure the pipeline's cost with closed-loop clients that retry a 503 at
        // once (no Retry-After backoff): with production's adaptive limit on, they measure the 503 path
        // instead. P5 (burst) is the limit's scenario: `--scenario burst --api-env CONCURRENCY_LIMIT_ENABLED=true`.
        CONCURRENCY_LIMIT_ENABLED: 'false',
        // As the image sets it (deploy/Dockerfile): the young generation's size is a startup flag.
        NODE_OPTIONS: '--max-semi-space-size=8',
        ...opts.apiEnv,
      };
      const cmd = apiCommand(opts.api);
      log(`starting the Plinth API: ${cmd.runtime === 'node' ? 'node' : 'node --import tsx'} ${cmd.args.join(' ')} (NODE_ENV=production, LOG_LEVEL=warn)`);
      const nodeArgs = opts.cpuProfDir ? ['--cpu-prof', `--cpu-prof-dir=${opts.cpuProfDir}`] : [];
      if (opts.worker) apiEnv.PLINTH_ROLE = 'api';
      const api = await startNode({ name: 'plinth-api', ...cmd, args: [...nodeArgs, ...cmd.args], env: apiEnv, readyPath: '/readyz', readyTimeoutMs: 120_000 });
      apiInfo = { runtime: opts.api, firstStartMs: api.readyMs };
      log(`API ready in ${api.readyMs} ms (first start: includes migrating the empty database)`);
      // The worker role on its own (jobs, outbox relay, schedules, exports), as production runs it; ready when
      // its metrics listener answers /livez.
      let worker: Awaited<ReturnType<typeof startNode>> | undefined;
      if (opts.worker) {
        const port = await freePort();
        const workerArgs = [...nodeArgs, ...cmd.args.slice(0, -1), 'worker'];
        worker = await startNode({ name: 'plinth-worker', ...cmd, args: workerArgs, env: { ...apiEnv, PLINTH_ROLE: 'worker', METRICS_PORT: String(port) }, port, readyPath: '/livez', readyTimeoutMs: 60_000 });
        log(`worker ready in ${worker.readyMs} ms (pid ${worker.pid})`);
      }
      const rss = sampleRss(api.pid);
      const workerRss = worker ? sampleRss(worker.pid) : undefined;
      try {
        const ctx: BenchContext = { opts, env, api, worker, apiEnv, client: await connectApi(api.baseUrl), baselines, fixtures: {}, log };
        for (const s of apiScenarios) {
          if (s.baseline) await measureBaseline(s.baseline);
          // What the previous scenario left running (its outbox events' handlers, autovacuum of the rows it
          // wrote) finishes first: each scenario is measured on a settled system, not on its predecessor's tail.
          const settled = await waitQuiet([api.pid, ...(worker ? [worker.pid] : [])], env.databaseName, { timeoutMs: 60_000 });
          log(`scenario ${s.name}${settled > 1_000 ? ` (after ${(settled / 1000).toFixed(1)} s for the previous work to settle)` : ''}`);
          try {
            scenarios.push(await s.run(ctx));
          } catch (err) {
            log(`scenario ${s.name} failed: ${(err as Error).message}`);
            scenarios.push({ name: s.name, title: s.title, status: 'error', reason: (err as Error).message.slice(0, 300), targets: [] });
          }
          const last = scenarios[scenarios.length - 1]!;
          // Which scenario drives the API's memory (P7): its own peak RSS, sampled every 500 ms.
          last.metrics = { ...last.metrics, apiRssPeakMb: rss.windowPeak(), ...(workerRss ? { workerRssPeakMb: workerRss.windowPeak() } : {}) };
          log(`${s.name}: ${last.status}${last.load ? ` ${last.load.okPerSec} 2xx/s p95 ${last.load.latencyMs.p95} ms, API CPU ${last.load.serverCpuUsPerRequest ?? '?'} µs/request` : ''}${last.reason ? ` (${last.reason})` : ''}`);
        }
      } finally {
        ({ peakMb: rssPeak, lastMb: rssLast } = rss.stop());
        if (workerRss) ({ peakMb: workerRssPeak, lastMb: workerRssLast } = workerRss.stop());
        await worker?.stop('SIGTERM');
        await api.stop('SIGTERM');
      }
    }
    for (const b of ['hello', 'select', 'insert', 'pgbench'] as BaselineName[]) await measureBaseline(b);
    const targets = scenarios.flatMap((s) => s.targets);
    if (rssPeak > 0) targets.push(target('P7', 'API RSS < 150 MB (peak over the run)', rssPeak, 150, 'MB', '<'));
    const report: BenchReport = {
      startedAt: startedAt.toISOString(),
      finishedAt: new Date().toISOString(),
      machine: mach,
      options: { ...opts, outDir: path.relative(ROOT, opts.outDir) || '.' },
      baselines: (['hello', 'select', 'insert', 'pgbench'] as BaselineName[]).flatMap((b) => (baselines[b] ? [baselines[b]!] : [])),
      scenarios,
      api: {
        rssPeakMb: rssPeak, rssLastMb: rssLast, helloBaselineRssMb: baselines.hello?.rssMb, ...apiInfo,
        topology: opts.worker ? 'api+worker' : 'single-process',
        ...(workerRssPeak !== undefined ? { workerRssPeakMb: workerRssPeak, workerRssLastMb: workerRssLast! } : {}),
      },
      targets: targets.sort((a, b) => a.id.localeCompare(b.id)),
    };
    fs.mkdirSync(opts.outDir, { recursive: true });
    const stamp = startedAt.toISOString().replace(/[:.]/g, '-');
    const jsonPath = path.join(opts.outDir, `${stamp}.json`);
    const htmlPath = path.join(opts.outDir, `${stamp}.html`);
    fs.writeFileSync(jsonPath, `${JSON.stringify(report, null, 1)}\n`);
    fs.writeFileSync(htmlPath, renderHtml(report));
    console.log(renderTable(report));
    console.log(`\nwrote ${path.relative(process.cwd(), jsonPath)} and ${path.relative(process.cwd(), htmlPath)}`);
  } catch (err) {
    console.error(`bench failed: ${(err as Error).stack ?? err}`);
    exitCode = 1;
  } finally {
    await env.cleanup();
  }
  return exitCode;
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  void runBench(process.argv.slice(2)).then((code) => process.exit(code));
}
