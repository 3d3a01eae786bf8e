/**
 * Fault runs on the local cluster, each bounded and self-stopping. Writers POST through HAProxy with
 * an Idempotency-Key and retry on the same key (and body) until acknowledged; one fault is injected
 * mid-run. Afterwards the database is checked directly (as the cluster's superuser) for acknowledged
 * writes that are missing and for resources created twice.
 *
 *   sigterm-api       SIGTERM one API instance at t=5 s (restarted after the run)
 *   kill-redis        kill -9 Redis at t=5 s, start it again 30 s later
 *   restart-postgres  pg_ctl restart -m fast on the primary at t=5 s
 */
import { randomBytes, randomUUID } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import pg from 'pg';
import { connectApi, createProject, hasRoute, signup, type Api, type Tenant } from '../lib/api.ts';
import { ROOT, sleep } from '../lib/processes.ts';
import { renderFaultsHtml } from '../lib/report.ts';
import { createSeriesRecorder, round, type SecondSample } from '../lib/stats.ts';
import { down, pgCtl, pidAlive, readState, redisPid, redisUp, RUN, startApi, up, type ClusterState } from './cluster.ts';

interface WriteShape {
  endpoint: string;
  path: string;
  /** Text column the marker lands in, to find duplicates in the database. */
  markerColumn: 'title' | 'name';
  body(marker: string): unknown;
}

export interface FaultResult {
  fault: string;
  status: 'ok' | 'skipped' | 'error';
  reason?: string;
  endpoint?: string;
  /** API instances that exited by themselves during the run (restarted afterwards). */
  crashedInstances?: string[];
  /** Table the written resources were found in (verification is done there). */
  table?: string;
  durationSec?: number;
  injectedAtSec?: number;
  restoredAtSec?: number;
  attempts?: number;
  acknowledged?: number;
  acknowledgedLost?: number;
  duplicates?: number;
  /** Responses a client saw that are not 2xx, nor 429/503 with Retry-After, nor 409 (key in flight). */
  clientVisibleErrors?: number;
  errorsByKind?: Record<string, number>;
  retryableRejections?: number;
  /** 429/503 with Retry-After and 409 in flight, by status and problem code (retried on the same key). */
  rejectionsByKind?: Record<string, number>;
  recoverySec?: number;
  perSecond?: { t: number; ok: number; failed: number }[];
  /** Every attempt's latency and status, per second (for the HTML chart). */
  series?: SecondSample[];
  targets?: { id: string; description: string; measured: string; pass: boolean }[];
}

async function pickWrite(api: Api, t: Tenant): Promise<WriteShape | undefined> {
  if (hasRoute(api, 'createTask')) {
    const projectId = await createProject(api, t, 'Faults');
    return {
      endpoint: 'POST /v1/orgs/{orgId}/projects/{projectId}/tasks', path: `/v1/orgs/${t.orgId}/projects/${projectId}/tasks`,
      markerColumn: 'title', body: (m) => ({ title: m }),
    };
  }
  if (hasRoute(api, 'createProject')) {
    return {
      endpoint: 'POST /v1/orgs/{orgId}/projects', path: `/v1/orgs/${t.orgId}/projects`, markerColumn: 'name',
      body: (m) => ({ name: m, key: `F${randomBytes(3).toString('hex').toUpperCase().replace(/[0-9]/g, 'Z')}` }),
    };
  }
  if (hasRoute(api, 'createOrg')) return { endpoint: 'POST /v1/orgs', path: '/v1/orgs', markerColumn: 'name', body: (m) => ({ name: m }) };
  return undefined;
}

interface Ack { key: string; marker: string; id: string }

/** One writer: new key per resource; same key and body on every retry until acknowledged. */
async function writer(api: Api, t: Tenant, w: WriteShape, run: string, stopAt: number, rec: Recorder): Promise<void> {
  let n = 0;
  while (Date.now() < stopAt) {
    const key = randomUUID();
    const marker = `${run}-${randomBytes(4).toString('hex')}-${n++}`;
    const body = w.body(marker);
    const giveUp = Date.now() + 30_000;
    for (;;) {
      if (Date.now() > giveUp) {
        rec.fail('gave-up');
        break;
      }
      let status = 0;
      let retryAfter: string | null = null;
      let id: string | undefined;
      let code = '';
      const sent = Date.now();
      try {
        const res = await api.call('POST', w.path, { token: t.token, body, headers: { 'idempotency-key': key } });
        status = res.status;
        rec.latency(Date.now() - sent, status);
        retryAfter = res.headers.get('retry-after');
        id = res.body?.id;
        code = typeof res.body?.code === 'string' ? res.body.code : typeof res.body === 'string' ? res.body.slice(0, 40).replace(/\s+/g, ' ') : '';
      } catch (err) {
        rec.latency(Date.now() - sent, 0);
        rec.fail(`network:${(err as Error).name}`);
        await sleep(200);
        continue;
      }
      if (status >= 200 && status < 300 && id) {
        rec.ok({ key, marker, id });
        break;
      }
      if ((status === 429 || status === 503) && retryAfter) {
        rec.rejected(`${status} ${code}`);
        await sleep(Math.min(1000, Number(retryAfter) * 1000 || 200));
        continue;
      }
      if (status === 409) {
        rec.rejected(`409 ${code}`);
        await sleep(100);
        continue;
      }
      rec.fail(`${status}${status === 429 || status === 503 ? ' without Retry-After' : ''} ${code}`.trim());
      await sleep(200);
    }
  }
}

function createRecorder(startedAt: number) {
  const perSecond: { t: number; ok: number; failed: number }[] = [];
  const at = () => {
    const t = Math.floor((Date.now() - startedAt) / 1000);
    while (perSecond.length <= t) perSecond.push({ t: perSecond.length, ok: 0, failed: 0 });
    return perSecond[t]!;
  };
  const acks: Ack[] = [];
  const errors: Record<string, number> = {};
  let rejected = 0;
  const rejections: Record<string, number> = {};
  let attempts = 0;
  let lastFailureAt = 0;
  const series = createSeriesRecorder(startedAt);
  return {
    acks, errors, rejections, perSecond, series,
    latency(ms: number, status: number) { series.record(Date.now(), ms, status); },
    get rejectedCount() { return rejected; },
    get attempts() { return attempts; },
    get lastFailureAt() { return lastFailureAt; },
    ok(a: Ack) { attempts++; acks.push(a); at().ok++; },
    rejected(kind: string) { attempts++; rejected++; rejections[kind] = (rejections[kind] ?? 0) + 1; at().failed++; lastFailureAt = Date.now(); },
    fail(kind: string) { attempts++; errors[kind] = (errors[kind] ?? 0) + 1; at().failed++; lastFailureAt = Date.now(); },
  };
}
type Recorder = ReturnType<typeof createRecorder>;

/** Acknowledged ids missing from the database, and markers stored more than once. */
async function verify(state: ClusterState, w: WriteShape, acks: Ack[], run: string): Promise<{ lost: number; duplicates: number; table: string }> {
  const client = new pg.Client({ connectionString: state.databaseUrl });
  await client.connect();
  try {
    const { rows: tables } = await client.query<{ table_name: string }>(
      `select c.table_name from information_schema.columns c
        join information_schema.columns i on i.table_schema = c.table_schema and i.table_name = c.table_name and i.column_name = 'id'
       where c.table_schema = 'public' and c.column_name = $1`, [w.markerColumn]);
    for (const { table_name } of tables) {
      const t = `"${table_name.replace(/"/g, '')}"`;
      const { rows: hit } = await client.query(`select count(*)::int as n from ${t} where ${w.markerColumn} like $1`, [`${run}-%`]);
      if ((hit[0]?.n ?? 0) === 0) continue;
      const ids = acks.map((a) => a.id);
      const { rows: found } = await client.query(`select id::text as id from ${t} where id::text = any($1::text[])`, [ids]);
      const have = new Set(found.map((r) => r.id));
      const { rows: dup } = await client.query(
        `select coalesce(sum(n - 1), 0)::int as d from (select count(*) as n from ${t} where ${w.markerColumn} like $1 group by ${w.markerColumn} having count(*) > 1) x`,
        [`${run}-%`]);
      return { lost: ids.filter((id) => !have.has(id)).length, duplicates: dup[0]?.d ?? 0, table: table_name };
    }
    return { lost: acks.length, duplicates: 0, table: '(no table holds the written markers)' };
  } finally {
    await client.end();
  }
}

interface FaultSpec {
  name: string;
  totalSec: number;
  injectAtSec: number;
  inject(state: ClusterState): Promise<void>;
  /** Undo the fault during the run (Redis back); returns when done. */
  restoreAtSec?: number;
  restore?(state: ClusterState): Promise<void>;
  /** After the run, put the cluster back as it was. */
  cleanup?(state: ClusterState): Promise<void>;
}

export const FAULTS: FaultSpec[] = [
  {
    name: 'sigterm-api', totalSec: 20, injectAtSec: 5,
    async inject(state) {
      process.kill(state.apis[0]!.pid, 'SIGTERM');
    },
    async cleanup(state) {
      for (let i = 0; i < 80; i++) {
        try { process.kill(state.apis[0]!.pid, 0); await sleep(250); } catch { break; }
      }
      state.apis[0] = await startApi(state, 0);
      fs.writeFileSync(path.join(RUN, 'state.json'), JSON.stringify(state, null, 1));
    },
  },
  {
    name: 'kill-redis', totalSec: 45, injectAtSec: 5, restoreAtSec: 35,
    async inject() {
      const pid = redisPid();
      if (pid) process.kill(pid, 'SIGKILL');
    },
    async restore() {
      redisUp();
    },
  },
  {
    name: 'restart-postgres', totalSec: 20, injectAtSec: 5,
    async inject() {
      // Synchronous pg_ctl: the primary is down for as long as the restart takes (~1-3 s).
      pgCtl(path.join(RUN, 'pg-primary'), 'restart', ['-m', 'fast']);
    },
  },
];

async function runFault(spec: FaultSpec, state: ClusterState, api: Api, t: Tenant, w: WriteShape, clients: number): Promise<FaultResult> {
  const run = `fault-${spec.name}-${Date.now().toString(36)}`;
  const startedAt = Date.now();
  const rec = createRecorder(startedAt);
  const stopAt = startedAt + spec.totalSec * 1000;
  const writers = Array.from({ length: clients }, () => writer(api, t, w, run, stopAt, rec));
  let injectedAt = 0;
  let restoredAt = 0;
  const timeline = (async () => {
    await sleep(spec.injectAtSec * 1000);
    injectedAt = Date.now();
    console.log(`  t=${spec.injectAtSec}s inject ${spec.name}`);
    await spec.inject(state);
    if (spec.restore && spec.restoreAtSec) {
      await sleep(Math.max(0, startedAt + spec.restoreAtSec * 1000 - Date.now()));
      console.log(`  t=${spec.restoreAtSec}s restore`);
      await spec.restore(state);
      restoredAt = Date.now();
    }
  })();
  await Promise.all([...writers, timeline]);
  const endedAt = Date.now();
  await spec.cleanup?.(state);
  // An instance that died on its own (not the one this fault stopped) is a finding: record and restart it.
  const crashed: string[] = [];
  for (const [i, a] of state.apis.entries()) {
    if (pidAlive(a.pid)) continue;
    crashed.push(a.name);
    const tail = fs.existsSync(path.join(RUN, `${a.name}.log`)) ? fs.readFileSync(path.join(RUN, `${a.name}.log`), 'utf8') : '';
    const why = /\n(\w*Error[^\n]*|error: [^\n]*)/.exec(tail)?.[1] ?? 'see its log';
    console.log(`  ${a.name} is not running after the fault (${why}); restarting it`);
    state.apis[i] = await startApi(state, i);
  }
  fs.writeFileSync(path.join(RUN, 'state.json'), JSON.stringify(state, null, 1));
  const check = await verify(state, w, rec.acks, run);
  const clientVisibleErrors = Object.values(rec.errors).reduce((a, b) => a + b, 0);
  const faultEnd = restoredAt || injectedAt;
  const recoverySec = rec.lastFailureAt > faultEnd ? round((rec.lastFailureAt - faultEnd) / 1000, 1) : 0;
  return {
    fault: spec.name, status: 'ok', endpoint: w.endpoint, table: check.table, crashedInstances: crashed,
    durationSec: round((endedAt - startedAt) / 1000, 1),
    injectedAtSec: round((injectedAt - startedAt) / 1000, 1),
    ...(restoredAt ? { restoredAtSec: round((restoredAt - startedAt) / 1000, 1) } : {}),
    attempts: rec.attempts, acknowledged: rec.acks.length,
    acknowledgedLost: check.lost, duplicates: check.duplicates,
    clientVisibleErrors, errorsByKind: rec.errors, retryableRejections: rec.rejectedCount, rejectionsByKind: rec.rejections, recoverySec,
    perSecond: rec.perSecond, series: rec.series.series(),
    targets: [
      { id: 'F1', description: 'acknowledged writes lost = 0', measured: String(check.lost), pass: check.lost === 0 },
      { id: 'F2', description: 'duplicate resources = 0', measured: String(check.duplicates), pass: check.duplicates === 0 },
      { id: 'F3', description: 'client-visible errors only 503/429 with Retry-After', measured: `${clientVisibleErrors} other`, pass: clientVisibleErrors === 0 },
      { id: 'F4', description: 'recovery < 10 s', measured: `${recoverySec} s`, pass: recoverySec < 10 },
      { id: 'F5', description: 'no API instance crashes', measured: crashed.length ? crashed.join(', ') : 'none', pass: crashed.length === 0 },
    ],
  };
}

export async function runFaults(argv: string[]): Promise<number> {
  const only = argv.includes('--only') ? argv[argv.indexOf('--only') + 1]!.split(',') : FAULTS.map((f) => f.name);
  const keep = argv.includes('--keep');
  const clients = argv.includes('--clients') ? Number(argv[argv.indexOf('--clients') + 1]) : 12;
  let state = readState();
  const startedHere = !state;
  if (!state) state = await up({ apis: 2, workers: 1 });
  for (const [i, a] of state.apis.entries()) {
    if (!pidAlive(a.pid)) state.apis[i] = await startApi(state, i);
  }
  const results: FaultResult[] = [];
  try {
    const api = await connectApi(state.lbUrl.replace('localhost', '127.0.0.1'));
    let tenant: Tenant | undefined;
    let w: WriteShape | undefined;
    if (hasRoute(api, 'signup')) {
      tenant = await signup(api, 'faults');
      w = await pickWrite(api, tenant);
    }
    for (const spec of FAULTS.filter((f) => only.includes(f.name))) {
      if (!tenant || !w) {
        results.push({ fault: spec.name, status: 'skipped', reason: 'no POST endpoint with Idempotency-Key in this build (needs identity + projects)' });
        continue;
      }
      console.log(`fault ${spec.name} (${spec.totalSec} s, ${clients} writers on ${w.endpoint})`);
      try {
        results.push(await runFault(spec, state, api, tenant, w, clients));
      } catch (err) {
        results.push({ fault: spec.name, status: 'error', reason: (err as Error).message.slice(0, 300) });
      }
      const r = results[results.length - 1]!;
      console.log(`  ${r.status}: acked ${r.acknowledged ?? '-'} lost ${r.acknowledgedLost ?? '-'} dup ${r.duplicates ?? '-'} errors ${r.clientVisibleErrors ?? '-'} ${JSON.stringify(r.errorsByKind ?? {})} rejections ${r.retryableRejections ?? '-'} ${JSON.stringify(r.rejectionsByKind ?? {})} recovery ${r.recoverySec ?? '-'} s ${r.reason ?? ''}`);
    }
  } finally {
    if (startedHere && !keep) await down();
  }
  const out = path.join(ROOT, 'bench/results');
  fs.mkdirSync(out, { recursive: true });
  const file = path.join(out, `faults-${new Date().toISOString().replace(/[:.]/g, '-')}.json`);
  const report = { finishedAt: new Date().toISOString(), cluster: { apis: state.apis.length, workers: state.workers.length, clients }, results };
  fs.writeFileSync(file, `${JSON.stringify(report, null, 1)}\n`);
  fs.writeFileSync(file.replace(/\.json$/, '.html'), renderFaultsHtml(report));
  console.log('\nfault        acked  lost  dup  errors  429/503/409  recovery');
  for (const r of results) {
    console.log(r.status === 'ok'
      ? `${r.fault.padEnd(18)} ${String(r.acknowledged).padStart(5)} ${String(r.acknowledgedLost).padStart(5)} ${String(r.duplicates).padStart(4)} ${String(r.clientVisibleErrors).padStart(7)} ${String(r.retryableRejections).padStart(12)} ${String(r.recoverySec).padStart(7)} s  ${r.targets!.every((x) => x.pass) ? 'PASS' : `MISS ${r.targets!.filter((x) => !x.pass).map((x) => x.id).join(',')}`}`
      : `${r.fault.padEnd(18)} ${r.status}: ${r.reason}`);
  }
  console.log(`wrote ${path.relative(process.cwd(), file)} and .html`);
  return 0;
}
