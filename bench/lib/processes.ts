import { createWriteStream } from 'node:fs';
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { processCpuUs } from './load.ts';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');

export interface Child {
  name: string;
  pid: number;
  port: number;
  baseUrl: string;
  proc: ChildProcess;
  /** Spawn → first 2xx of the readiness URL, in milliseconds (cold start). */
  readyMs: number;
  /** Last lines of stderr/stdout, for a useful message when it dies. */
  tail(): string;
  rssMb(): number;
  stop(signal?: NodeJS.Signals, timeoutMs?: number): Promise<number | null>;
}

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      const port = typeof addr === 'object' && addr ? addr.port : 0;
      srv.close(() => resolve(port));
    });
  });
}

/** Resident set size of a process in MB, from /proc (Linux); 0 when unavailable. */
export function rssMbOf(pid: number): number {
  try {
    const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
    const m = /VmRSS:\s+(\d+)\s+kB/.exec(status);
    return m ? Math.round((Number(m[1]) / 1024) * 10) / 10 : 0;
  } catch {
    return 0;
  }
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** GET url until it answers 2xx or the deadline passes (polled every pollMs). */
export async function waitHttp(url: string, timeoutMs: number, isAlive: () => boolean = () => true, pollMs = 150): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let last = '';
  while (Date.now() < deadline) {
    if (!isAlive()) throw new Error(`process exited before ${url} answered`);
    try {
      const res = await fetch(url, { signal: AbortSignal.timeout(1_000) });
      if (res.ok) return;
      last = `HTTP ${res.status}`;
    } catch (err) {
      last = (err as Error).message;
    }
    await sleep(pollMs);
  }
  throw new Error(`${url} not ready after ${timeoutMs} ms (${last})`);
}

/**
 * Starts a Node entry point as its own process (its own event loop, so the load generator never competes
 * with it inside one process) and waits for its readiness URL. `runtime: 'tsx'` (default) loads TypeScript
 * sources through tsx; `'node'` runs compiled JavaScript (dist/) with plain node, as production does.
 */
export async function startNode(opts: {
  name: string;
  args: string[];
  env: Record<string, string>;
  runtime?: 'tsx' | 'node';
  port?: number;
  readyPath?: string;
  readyTimeoutMs?: number;
  /** Readiness polling period; small when the start time itself is measured. */
  pollMs?: number;
}): Promise<Child> {
  const port = opts.port ?? (await freePort());
  const loader = (opts.runtime ?? 'tsx') === 'tsx' ? ['--import', 'tsx'] : [];
  const spawnedAt = performance.now();
  const proc = spawn(process.execPath, [...loader, ...opts.args], {
    cwd: ROOT,
    env: { ...process.env, PORT: String(port), HOST: '127.0.0.1', ...opts.env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const lines: string[] = [];
  const keep = (buf: Buffer) => {
    lines.push(...buf.toString().split('\n').filter(Boolean));
    if (lines.length > 40) lines.splice(0, lines.length - 40);
  };
  proc.stdout?.on('data', keep);
  proc.stderr?.on('data', keep);
  // Debugging aid: BENCH_PROCESS_LOG=FILE appends every line the processes print (e.g. with --api-env LOG_LEVEL=info).
  if (process.env.BENCH_PROCESS_LOG) {
    const out = createWriteStream(process.env.BENCH_PROCESS_LOG, { flags: 'a' });
    proc.stdout?.pipe(out);
    proc.stderr?.pipe(out);
  }
  let exited = false;
  const exitCode = new Promise<number | null>((resolve) =>
    proc.on('exit', (code) => {
      exited = true;
      resolve(code);
    }),
  );
  const baseUrl = `http://127.0.0.1:${port}`;
  const child: Child = {
    name: opts.name,
    pid: proc.pid!,
    readyMs: 0,
    port,
    baseUrl,
    proc,
    tail: () => lines.join('\n'),
    rssMb: () => rssMbOf(proc.pid!),
    async stop(signal = 'SIGTERM', timeoutMs = 15_000) {
      if (exited) return exitCode;
      proc.kill(signal);
      const timer = setTimeout(() => !exited && proc.kill('SIGKILL'), timeoutMs);
      const code = await exitCode;
      clearTimeout(timer);
      return code;
    },
  };
  try {
    await waitHttp(`${baseUrl}${opts.readyPath ?? '/livez'}`, opts.readyTimeoutMs ?? 60_000, () => !exited, opts.pollMs);
    child.readyMs = Math.round(performance.now() - spawnedAt);
  } catch (err) {
    await child.stop('SIGKILL');
    throw new Error(`${opts.name} did not start: ${(err as Error).message}\n${child.tail()}`);
  }
  return child;
}

/** Samples a process's RSS every interval; peak and last are what the report shows. */
export function sampleRss(pid: number, intervalMs = 500) {
  let peak = rssMbOf(pid);
  let last = peak;
  let windowPeak = peak;
  const timer = setInterval(() => {
    last = rssMbOf(pid) || last;
    peak = Math.max(peak, last);
    windowPeak = Math.max(windowPeak, last);
  }, intervalMs);
  timer.unref();
  return {
    stop: () => {
      clearInterval(timer);
      return { peakMb: peak, lastMb: last };
    },
    current: () => ({ peakMb: peak, lastMb: last }),
    /** The peak since the previous call (one scenario's), then starts a new window at the current RSS. */
    windowPeak: () => {
      const p = Math.max(windowPeak, (last = rssMbOf(pid) || last));
      windowPeak = last;
      return p;
    },
  };
}

/**
 * CPU so far (µs) of each Postgres backend serving `dbName` (its process title names the database): the
 * third process on the machine's two cores, beside the API and the worker. Backends that exit meanwhile are
 * not counted (the pools keep theirs open).
 */
export function postgresCpuUs(dbName: string): Map<number, number> {
  const out = new Map<number, number>();
  let pids: string[] = [];
  try {
    pids = fs.readdirSync('/proc').filter((d) => /^\d+$/.test(d));
  } catch {
    return out;
  }
  for (const pid of pids) {
    try {
      const cmd = fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8');
      if (!cmd.startsWith('postgres:') || !cmd.includes(` ${dbName} `)) continue;
      const us = processCpuUs(Number(pid));
      if (us !== undefined) out.set(Number(pid), us);
    } catch {
      // gone meanwhile
    }
  }
  return out;
}

export interface CpuSnapshot {
  at: number;
  dbName: string;
  pids: { api: number; worker?: number };
  /** µs so far of each process (undefined where /proc is not available). */
  api: number | undefined;
  worker: number | undefined;
  /** This process: the load generator. */
  loader: number | undefined;
  postgres: Map<number, number>;
}

/** CPU so far of the API, the worker, this process and the run database's backends; `cpuSecSince` compares. */
export function cpuSnapshot(pids: { api: number; worker?: number }, dbName: string): CpuSnapshot {
  return {
    at: Date.now(), dbName, pids,
    api: processCpuUs(pids.api),
    worker: pids.worker === undefined ? undefined : processCpuUs(pids.worker),
    loader: processCpuUs(process.pid),
    postgres: postgresCpuUs(dbName),
  };
}

/**
 * Seconds of wall time and of each one's CPU (0.1 s) since `start` (undefined where a process's CPU is unknown);
 * backends started meanwhile count from zero.
 */
export function cpuSecSince(start: CpuSnapshot) {
  const now = cpuSnapshot(start.pids, start.dbName);
  const sec = (a: number | undefined, b: number | undefined) => (a !== undefined && b !== undefined ? Math.round((b - a) / 1e5) / 10 : undefined);
  let pgUs = 0;
  for (const [pid, us] of now.postgres) pgUs += us - (start.postgres.get(pid) ?? 0);
  return {
    wall: Math.round((now.at - start.at) / 100) / 10,
    api: sec(start.api, now.api),
    worker: sec(start.worker, now.worker),
    loader: sec(start.loader, now.loader),
    postgres: Math.round(pgUs / 1e5) / 10,
  };
}

/**
 * Waits until the given processes and the database's backends together use under `maxCores` of CPU over
 * `windowMs` (at most `timeoutMs`): what a previous phase left behind (outbox fan-out, jobs, autovacuum) is
 * done before the next phase is measured. Returns how long it waited.
 */
export async function waitQuiet(pids: number[], dbName: string, opts: { maxCores?: number; windowMs?: number; timeoutMs?: number } = {}): Promise<number> {
  const { maxCores = 0.1, windowMs = 500, timeoutMs = 20_000 } = opts;
  const started = Date.now();
  const total = () => pids.reduce((sum, pid) => sum + (processCpuUs(pid) ?? 0), 0) + [...postgresCpuUs(dbName).values()].reduce((a, b) => a + b, 0);
  for (;;) {
    const before = total();
    await new Promise((r) => setTimeout(r, windowMs));
    if ((total() - before) / (windowMs * 1000) < maxCores || Date.now() - started > timeoutMs) return Date.now() - started;
  }
}
