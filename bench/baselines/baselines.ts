import { execFile } from 'node:child_process';
import { randomInt } from 'node:crypto';
import { promisify } from 'node:util';
import { runLoad } from '../lib/load.ts';
import { sampleRss, startNode } from '../lib/processes.ts';
import type { BaselineName, BaselineResult, BenchOptions } from '../lib/types.ts';

const exec = promisify(execFile);

export const BASELINE_TITLES: Record<BaselineName, string> = {
  hello: 'Fastify hello-world (GET /)',
  select: 'Fastify + pg: one SELECT by primary key',
  insert: 'Fastify + pg: one single-row INSERT',
  pgbench: 'pgbench -S (select-only, 10 clients, no HTTP)',
};

/** Runs one baseline as its own process against this run's database, with the same load shape as the scenarios. */
export async function runBaseline(
  name: BaselineName,
  opts: { databaseUrl: string; bench: BenchOptions; log: (m: string) => void; baselineRows: number },
): Promise<BaselineResult> {
  const title = BASELINE_TITLES[name];
  if (name === 'pgbench') return runPgbench(opts.databaseUrl, opts.bench.durationSec, opts.log);
  const server = await startNode({
    name: `baseline-${name}`,
    args: ['bench/baselines/server.ts', name],
    env: { DATABASE_URL: opts.databaseUrl, NODE_ENV: 'production' },
  });
  const rss = sampleRss(server.pid);
  try {
    const request =
      name === 'hello'
        ? { path: '/' }
        : name === 'select'
          ? { path: () => `/items/${randomInt(1, opts.baselineRows + 1)}` }
          : { method: 'POST' as const, path: '/items', body: () => ({ title: `baseline ${randomInt(1e9)}` }) };
    // Warm up JIT and pool connections so the first second does not penalize the baseline.
    await runLoad({ baseUrl: server.baseUrl, request, durationSec: 1, connections: opts.bench.connections });
    const load = await runLoad({ baseUrl: server.baseUrl, serverPid: server.pid, request, durationSec: opts.bench.durationSec, connections: opts.bench.connections });
    opts.log(`baseline ${name}: ${load.okPerSec} req/s, p95 ${load.latencyMs.p95} ms, server CPU ${load.serverCpuUsPerRequest ?? '?'} µs/request`);
    return { name, title, status: 'ok', okPerSec: load.okPerSec, load, rssMb: rss.stop().peakMb };
  } catch (err) {
    rss.stop();
    return { name, title, status: 'error', reason: (err as Error).message };
  } finally {
    await server.stop();
  }
}

async function runPgbench(databaseUrl: string, durationSec: number, log: (m: string) => void): Promise<BaselineResult> {
  const title = BASELINE_TITLES.pgbench;
  try {
    await exec('which', ['pgbench']);
  } catch {
    return { name: 'pgbench', title, status: 'skipped', reason: 'pgbench not installed (postgresql-contrib)' };
  }
  try {
    await exec('pgbench', ['-i', '-s', '1', '-q', databaseUrl], { timeout: 120_000 });
    const { stdout } = await exec('pgbench', ['-S', '-n', '-c', '10', '-j', '2', '-T', String(Math.max(1, durationSec)), databaseUrl], {
      timeout: (durationSec + 60) * 1000,
    });
    const m = /tps = ([\d.]+) \(without initial connection time\)/.exec(stdout) ?? /tps = ([\d.]+)/.exec(stdout);
    if (!m) return { name: 'pgbench', title, status: 'error', reason: `could not parse pgbench output: ${stdout.slice(-200)}` };
    const tps = Math.round(Number(m[1]));
    log(`baseline pgbench -S: ${tps} tps`);
    return { name: 'pgbench', title, status: 'ok', okPerSec: tps };
  } catch (err) {
    return { name: 'pgbench', title, status: 'error', reason: (err as Error).message.split('\n')[0] };
  }
}
