/**
 * What the fault suite's scenarios share: the run's context, processes started beside the cluster (probe
 * workers, extra API instances), events published straight into the outbox, and idempotent writers.
 */
import { spawn } from 'node:child_process';
import { randomBytes, randomUUID } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import pg from 'pg';
import { newId } from '../../src/platform/ids.ts';
import { OUTBOX_CHANNEL } from '../../src/platform/outbox/publisher.ts';
import type { Tenant } from '../lib/api.ts';
import { ROOT, sleep, waitHttp } from '../lib/processes.ts';
import { pidAlive, plinthEnv, RUN, spawnPlinth, trackProcess, writeState, type ClusterState } from './cluster.ts';

export interface SuiteContext {
  state: ClusterState;
  quick: boolean;
  /** Superuser pool on the primary: fixtures, fault injection (row locks) and verification. */
  pg: pg.Pool;
  /** Lowercase letters and digits, unique per suite run: names of probe consumers, events, markers. */
  run: string;
  tenant: Tenant;
  projectId: string;
  log(msg: string): void;
}

/** One figure that must be 0. */
export interface Invariant {
  id: string;
  description: string;
  value: number;
}

export interface ScenarioResult {
  scenario: string;
  status: 'ok' | 'error';
  reason?: string;
  durationSec: number;
  invariants: Invariant[];
  /** Everything else measured (reported, not judged). */
  figures: Record<string, number | string>;
}

export type Scenario = {
  name: string;
  what: string;
  run(ctx: SuiteContext): Promise<Omit<ScenarioResult, 'scenario' | 'status' | 'durationSec'>>;
};

export const round1 = (n: number) => Math.round(n * 10) / 10;

/** Tables the probe worker writes (bench/cluster/fault-worker.ts). Not tenant data: no RLS. */
export async function createProbeTables(db: pg.Pool): Promise<void> {
  await db.query(`
    create table if not exists fault_effects (id bigserial primary key, consumer text not null, event_id uuid not null, at timestamptz not null default now());
    create table if not exists fault_ticks (id bigserial primary key, schedule text not null, scheduled_at timestamptz not null, runner text not null, ran_at timestamptz not null);
    grant select, insert on fault_effects, fault_ticks to public;
    grant usage on all sequences in schema public to public;`);
}

function track(state: ClusterState, name: string, pid: number): void {
  state.extras = [...(state.extras ?? []).filter((e) => pidAlive(e.pid)), { name, pid }];
  writeState(state);
}

export interface Proc {
  name: string;
  pid: number;
  exited: Promise<void>;
  alive(): boolean;
  /** SIGTERM (graceful) or SIGKILL, and wait for the exit (SIGKILL after 15 s). */
  stop(signal?: NodeJS.Signals): Promise<void>;
}

function procHandle(name: string, pid: number, exited: Promise<void>): Proc {
  let done = false;
  void exited.then(() => (done = true));
  return {
    name,
    pid,
    exited,
    alive: () => !done && pidAlive(pid),
    async stop(signal = 'SIGTERM') {
      if (done || !pidAlive(pid)) return;
      process.kill(pid, signal);
      const t = setTimeout(() => pidAlive(pid) && process.kill(pid, 'SIGKILL'), 15_000);
      await exited;
      clearTimeout(t);
    },
  };
}

/** Starts bench/cluster/fault-worker.ts with the cluster's environment plus `env`; resolves once it is working. */
export async function startProbeWorker(ctx: SuiteContext, name: string, env: Record<string, string>): Promise<Proc> {
  const logFile = fs.openSync(path.join(RUN, `${name}.log`), 'a');
  const child = spawn(process.execPath, ['--import', 'tsx', 'bench/cluster/fault-worker.ts'], {
    cwd: ROOT,
    stdio: ['ignore', 'pipe', logFile],
    env: { ...process.env, ...plinthEnv(ctx.state), ...env },
  });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  trackProcess(child.pid!);
  track(ctx.state, name, child.pid!);
  const ready = new Promise<void>((resolve, reject) => {
    let seen = '';
    child.stdout!.on('data', (buf: Buffer) => {
      fs.writeSync(logFile, buf);
      seen = (seen + buf.toString()).slice(-2_000);
      if (seen.includes('fault-worker ready')) resolve();
    });
    void exited.then(() => reject(new Error(`${name} exited before it was ready (see bench/cluster/run/${name}.log)`)));
  });
  const timer = setTimeout(() => child.kill('SIGKILL'), 120_000);
  try {
    await ready;
  } finally {
    clearTimeout(timer);
  }
  return procHandle(name, child.pid!, exited);
}

/** An API instance outside HAProxy (its own port and environment, e.g. Redis through a cuttable proxy). */
export async function startExtraApi(ctx: SuiteContext, name: string, port: number, env: Record<string, string>): Promise<Proc> {
  const pid = spawnPlinth(name, ['start'], { ...plinthEnv(ctx.state), PORT: String(port), PLINTH_ROLE: 'api', ...env });
  track(ctx.state, name, pid);
  const exited = (async () => {
    while (pidAlive(pid)) await sleep(100);
  })();
  await waitHttp(`http://127.0.0.1:${port}/readyz`, 120_000, () => pidAlive(pid));
  return procHandle(name, pid, exited);
}

/** Inserts events into the outbox as EventPublisher.add does (NOTIFY included); returns their ids. */
export async function publish(db: pg.Pool, name: string, count: number): Promise<string[]> {
  const ids = Array.from({ length: count }, () => newId());
  await db.query(
    `with added as (insert into outbox (id, tenant_id, name, payload, occurred_at)
       select id, null, $2, '{}'::jsonb, now() from unnest($1::uuid[]) as id returning id)
     select pg_notify($3, '') from added limit 1`,
    [ids, name, OUTBOX_CHANNEL],
  );
  return ids;
}

/** Polls until done(value) or the deadline; returns the last value. */
export async function waitUntil<T>(probe: () => Promise<T>, done: (v: T) => boolean, timeoutMs: number, stepMs = 250): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await probe();
    if (done(v) || Date.now() > deadline) return v;
    await sleep(stepMs);
  }
}

export async function count(db: pg.Pool, text: string, params: unknown[] = []): Promise<number> {
  const { rows } = await db.query<{ n: number }>(text, params);
  return Number(rows[0]?.n ?? 0);
}

// ── idempotent writers ─────────────────────────────────────────────────────────────────────────────────

export interface WriteStats {
  acks: { key: string; marker: string; id: string }[];
  attempts: number;
  /** One key answered 2xx with two different resource ids. */
  idMismatches: number;
  /** Keys a writer stopped retrying (never acknowledged; not a loss). */
  gaveUp: number;
  byOutcome: Record<string, number>;
}

export function newWriteStats(): WriteStats {
  return { acks: [], attempts: 0, idMismatches: 0, gaveUp: 0, byOutcome: {} };
}

async function post(url: string, token: string, key: string, body: unknown, timeoutMs: number): Promise<{ status: number; id?: string; retryAfter?: number; code?: string }> {
  try {
    const res = await fetch(url, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${token}`, 'idempotency-key': key },
      body: JSON.stringify(body),
      signal: AbortSignal.timeout(timeoutMs),
    });
    const text = await res.text();
    let json: { id?: string; code?: string } = {};
    try {
      json = JSON.parse(text);
    } catch {
      // not JSON (a proxy's page)
    }
    return { status: res.status, id: json.id, code: json.code, retryAfter: Number(res.headers.get('retry-after')) || undefined };
  } catch (err) {
    return { status: 0, code: (err as Error).name };
  }
}

/**
 * One writer: a fresh Idempotency-Key per task, the same key and body on every retry until a 2xx, each
 * attempt to the next instance in turn (a retry lands on another instance). With `dual`, a key's first
 * attempt goes to two instances at once. `timeoutMs` is the client's patience: a request still running
 * on the server is abandoned and retried elsewhere.
 */
export async function idempotentWriter(opts: {
  bases: string[];
  tenant: Tenant;
  projectId: string;
  marker: string;
  /** Starts a new key while this answers true; the key in hand is finished (or given up after 60 s). */
  running: () => boolean;
  stats: WriteStats;
  timeoutMs: number;
  dualEvery?: number;
}): Promise<void> {
  const { bases, tenant, stats } = opts;
  const url = (i: number) => `${bases[i % bases.length]}/v1/orgs/${tenant.orgId}/projects/${opts.projectId}/tasks`;
  let n = 0;
  let turn = Math.floor(Math.random() * bases.length);
  while (opts.running()) {
    const key = randomUUID();
    const marker = `${opts.marker}-${randomBytes(4).toString('hex')}-${n}`;
    const body = { title: marker };
    const dual = opts.dualEvery !== undefined && n % opts.dualEvery === 0 && bases.length > 1;
    n++;
    const giveUpAt = Date.now() + 60_000;
    let first = true;
    let ackId: string | undefined;
    while (!ackId) {
      if (Date.now() > giveUpAt) {
        stats.gaveUp++;
        break;
      }
      const tries = first && dual ? [url(turn), url(turn + 1)] : [url(turn)];
      turn++;
      first = false;
      const answers = await Promise.all(tries.map((u) => post(u, tenant.token, key, body, opts.timeoutMs)));
      stats.attempts += answers.length;
      let wait = 0;
      for (const a of answers) {
        const kind = a.status === 0 ? `network ${a.code}` : `${a.status}${a.code ? ` ${a.code}` : ''}`;
        stats.byOutcome[kind] = (stats.byOutcome[kind] ?? 0) + 1;
        if (a.status >= 200 && a.status < 300 && a.id) {
          if (ackId && ackId !== a.id) stats.idMismatches++;
          ackId ??= a.id;
        } else {
          wait = Math.max(wait, a.retryAfter ? Math.min(1_000, a.retryAfter * 1_000) : a.status === 409 ? 100 : 200);
        }
      }
      if (ackId) stats.acks.push({ key, marker, id: ackId });
      else await sleep(wait);
    }
  }
}

/** Keys (markers) that produced more than one task, and acknowledged task ids missing from the table. */
export async function verifyWrites(db: pg.Pool, marker: string, stats: WriteStats): Promise<{ keysWithDuplicates: number; extraResources: number; acknowledgedLost: number; stored: number }> {
  const dup = await db.query<{ keys: number; extra: number }>(
    `select count(*)::int as keys, coalesce(sum(n - 1), 0)::int as extra
       from (select count(*) as n from tasks where title like $1 group by title having count(*) > 1) d`,
    [`${marker}-%`],
  );
  const ids = stats.acks.map((a) => a.id);
  const found = await count(db, 'select count(*)::int as n from tasks where id = any($1::uuid[])', [ids]);
  const stored = await count(db, 'select count(*)::int as n from tasks where title like $1', [`${marker}-%`]);
  return { keysWithDuplicates: dup.rows[0]!.keys, extraResources: dup.rows[0]!.extra, acknowledgedLost: ids.length - found, stored };
}
