import { measureCpuFloor } from '../lib/cpu-floor.ts';
import { runLoad } from '../lib/load.ts';
import { cpuSecSince, cpuSnapshot, rssMbOf, sampleRss, waitQuiet, type CpuSnapshot } from '../lib/processes.ts';
import { round } from '../lib/stats.ts';
import { skipped, target, type BenchContext, type Scenario } from '../lib/types.ts';
import { ensureProject, ensureTenant, pickCachedRead, seedInto } from './fixtures.ts';
import { pickCreate } from './writes.ts';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
/** Each concurrent load's rate, as a share of what it reaches alone (see the scenario). */
const LOAD_SHARE = 0.2;

/**
 * Queues an export of the fixture project's tasks and waits for it; rows/s from the export's own timestamps.
 * While it runs, the API's RSS against the rows done (every poll, 250 ms): whether memory follows the rows
 * exported or stays flat.
 */
async function exportTasks(ctx: BenchContext, orgId: string, token: string, projectId: string) {
  const created = await ctx.client.call('POST', `/v1/orgs/${orgId}/exports`, { token, body: { resource: 'tasks', format: 'csv', filters: { projectId } } });
  if (created.status !== 202) throw new Error(`POST exports: ${created.status} ${JSON.stringify(created.body).slice(0, 200)}`);
  const url = `/v1/orgs/${orgId}/exports/${created.body.id}`;
  const deadline = Date.now() + 15 * 60_000;
  const rss: Array<{ rows: number; rssMb: number }> = [];
  for (;;) {
    const res = await ctx.client.call('GET', url, { token });
    const e = res.body;
    // The process that runs the export: the worker when the bench started one, else the API.
    if (e?.status === 'running') rss.push({ rows: Number(e.rowsDone), rssMb: rssMbOf((ctx.worker ?? ctx.api).pid) });
    if (e?.status === 'succeeded') {
      const seconds = (Date.parse(e.finishedAt) - Date.parse(e.startedAt)) / 1000;
      return { rows: Number(e.rowsDone), bytes: Number(e.bytes), seconds, rowsPerSec: Number(e.rowsDone) / Math.max(0.001, seconds), rss };
    }
    if (e?.status === 'failed' || e?.status === 'cancelled') throw new Error(`export ${e.status}: ${JSON.stringify(e.error)}`);
    if (Date.now() > deadline) throw new Error(`export not done after 15 min (${e?.rowsDone} rows)`);
    await sleep(250);
  }
}

function rssDuringExport(samples: Array<{ rows: number; rssMb: number }>): Record<string, string | number> {
  const series = (xs: typeof samples) => xs.map((x) => `${Math.round(x.rows / 1000)}k:${Math.round(x.rssMb)}`).join(' ');
  if (samples.length < 4) return { exporterRssDuringExport: series(samples) };
  const q = Math.floor(samples.length / 4);
  const mean = (xs: typeof samples) => round(xs.reduce((a, x) => a + x.rssMb, 0) / xs.length, 1);
  const step = (samples.length - 1) / 9;
  return {
    exporterRssFirstQuarterMb: mean(samples.slice(0, q)),
    exporterRssLastQuarterMb: mean(samples.slice(-q)),
    // Ten samples, "thousands of rows done:MB".
    exporterRssDuringExport: series(Array.from({ length: 10 }, (_, i) => samples[Math.round(i * step)]!)),
  };
}

/**
 * Export the fixture project's tasks (10^6 with --large, else 10^5) while the cached-read and create loads
 * run at fixed rates, against the same loads without the export in the same run. The export runs on the
 * worker side of the API process (embedded roles) or a worker; its reads are keyset batches in READ ONLY
 * transactions (a replica when DATABASE_REPLICA_URLS is set).
 */
export const exportAtPeak: Scenario = {
  name: 'export-at-peak',
  title: 'Export at peak (reporting): 10^5 (--large: 10^6) tasks exported during cached reads and creates',
  async run(ctx) {
    const targets = (rowsPerSec?: number, readRatio?: number, writeRatio?: number, rss?: number, workerRss?: number) => [
      target('R1', 'export ≥ 50,000 rows/s', rowsPerSec, 50_000, '/s', '>='),
      target('R2a', 'cached-read p99 during export ≤ 1.2× without', readRatio, 1.2, '×', '<='),
      target('R2b', 'create p99 during export ≤ 1.2× without', writeRatio, 1.2, '×', '<='),
      target('R3', 'API RSS during export < 200 MB', rss, 200, 'MB', '<'),
      ...(ctx.worker ? [target('R3w', 'worker RSS during export < 200 MB', workerRss, 200, 'MB', '<')] : []),
    ];
    if (!ctx.client.has('POST', '/v1/orgs/{orgId}/exports')) return skipped(this, 'reporting exports not available', targets());
    const t = await ensureTenant(ctx);
    const projectId = await ensureProject(ctx);
    const want = ctx.opts.large ? 1_000_000 : 100_000;
    const have = ctx.fixtures.taskCount ?? 0;
    if (have < want) {
      await seedInto(ctx, want - have);
      ctx.fixtures.taskCount = want;
    }
    const read = await pickCachedRead(ctx);
    const write = await pickCreate(ctx);
    if (!read || !write) return skipped(this, 'no cached-read or create endpoint available', targets());

    // Fixed rates (not saturation), so "during" compares like with like, offered evenly (`pacing: 'uniform'`, as
    // I2 and U2: autocannon's rate mode sends each connection's share of a second back to back at the second's
    // start, so its p99 was the queue of that burst, with or without the export). Each at 20 % of what it reaches
    // alone: together 40 % of the API's capacity, as I2's read. At 40 % each (until 2026-12-02 11:00) the two
    // loads already exceeded what this 2-core machine serves with nothing else running — in the full run at
    // 10:56 the "alone" creates' p50 grew from 209 to 870 ms within the phase — so "alone" was a growing queue and
    // the ratio measured where that queue stood, not the export.
    const probeRead = await runLoad({ baseUrl: ctx.api.baseUrl, request: read.request, durationSec: 2, connections: ctx.opts.connections });
    const probeWrite = await runLoad({ baseUrl: ctx.api.baseUrl, request: write.request, durationSec: 2, connections: 8 });
    // Each phase warms its connections up for a second, unrecorded, at the same rate: the export starts when
    // the measured part of "during" does.
    const readShape = { baseUrl: ctx.api.baseUrl, request: read.request, durationSec: ctx.opts.durationSec, connections: 20, rate: Math.max(20, Math.round(probeRead.okPerSec * LOAD_SHARE)), pacing: 'uniform' as const, warmupSec: 1 };
    const writeShape = { baseUrl: ctx.api.baseUrl, request: write.request, durationSec: ctx.opts.durationSec, connections: 8, rate: Math.max(5, Math.round(probeWrite.okPerSec * LOAD_SHARE)), pacing: 'uniform' as const, warmupSec: 1 };
    // The probes' after-effects (their creates' outbox events and jobs) would otherwise fall into "alone".
    const dbName = ctx.env.databaseName;
    const pids = [ctx.api.pid, ...(ctx.worker ? [ctx.worker.pid] : [])];
    const settledMs = [await waitQuiet(pids, dbName)];
    const [readAlone, writeAlone] = await Promise.all([runLoad(readShape), runLoad(writeShape)]);
    // R2's floor: the same two loads again with nothing beside them (A/A: the measure's own spread), then while
    // Postgres burns half a core and a core doing nothing else.
    ctx.log('export-at-peak: the loads beside a Postgres CPU burner (the floor)');
    const floor = await measureCpuFloor(ctx.env.databaseUrl, [readShape, writeShape], [readAlone, writeAlone], [0, 0.5, 1], (r) => r.latencyMs.p99);
    settledMs.push(await waitQuiet(pids, dbName));

    ctx.log(`export-at-peak: exporting ${want} tasks during ${readShape.rate} reads/s + ${writeShape.rate} creates/s`);
    const rss = sampleRss(ctx.api.pid, 200);
    const rssBefore = rss.current().lastMb;
    const workerRss = ctx.worker ? sampleRss(ctx.worker.pid, 200) : undefined;
    const workerRssBefore = workerRss?.current().lastMb;
    // CPU while the export and the loads ran: the API, the worker, this database's backends, and this
    // process (the load generator), on the machine's two cores.
    let cpuStart: CpuSnapshot | undefined;
    let exporting: ReturnType<typeof exportTasks> | undefined;
    const startExport = () => {
      cpuStart = cpuSnapshot({ api: ctx.api.pid, worker: ctx.worker?.pid }, dbName);
      exporting = exportTasks(ctx, t.orgId, t.token, projectId);
      exporting.catch(() => undefined); // awaited below
    };
    const [readDuring, writeDuring] = await Promise.all([runLoad({ ...readShape, onMeasuring: startExport }), runLoad(writeShape)]);
    if (!exporting || !cpuStart) throw new Error('the export was never started');
    const cpu = cpuSecSince(cpuStart);
    const exported = await exporting;
    const mem = rss.stop();
    const workerMem = workerRss?.stop();

    const readRatio = readDuring.latencyMs.p99 / Math.max(0.01, readAlone.latencyMs.p99);
    const writeRatio = writeDuring.latencyMs.p99 / Math.max(0.01, writeAlone.latencyMs.p99);
    return {
      name: this.name,
      title: this.title,
      status: 'ok',
      endpoint: `POST /v1/orgs/{orgId}/exports (tasks, csv) during ${read.endpoint} + ${write.endpoint}`,
      load: readDuring,
      phases: { readAlone, readDuring, writeAlone, writeDuring },
      metrics: {
        rows: exported.rows,
        mib: round(exported.bytes / 2 ** 20, 1),
        exportSeconds: round(exported.seconds, 2),
        rowsPerSec: Math.round(exported.rowsPerSec),
        readP99Alone: readAlone.latencyMs.p99,
        readP99During: readDuring.latencyMs.p99,
        writeP99Alone: writeAlone.latencyMs.p99,
        writeP99During: writeDuring.latencyMs.p99,
        p99ChangeFloor: Object.entries(floor).map(([k, v]) => `read / create ${v} ${k}`).join(', '),
        settledBeforeAloneMs: settledMs[0]!,
        settledBeforeExportMs: settledMs[1]!,
        duringSec: cpu.wall,
        duringCpuSec: `api ${cpu.api ?? 'n/a'}, worker ${cpu.worker ?? 'n/a'}, postgres ${cpu.postgres}, load generator ${cpu.loader ?? 'n/a'}`,
        apiRssPeakMb: mem.peakMb,
        // What the API process held when the export started (after the fixtures and the "alone" loads).
        apiRssBeforeExportMb: rssBefore,
        ...(workerMem ? { workerRssPeakMb: workerMem.peakMb, workerRssBeforeExportMb: workerRssBefore! } : {}),
        // RSS of the exporting process (the worker when there is one) while the export ran: mean of its first and last quarter (by time), and ten samples (rows done, MB).
        ...rssDuringExport(exported.rss),
        note: 'the export overlaps the "during" loads only while it runs; with 10^5 rows it may end first (use --large)',
      },
      targets: targets(exported.rowsPerSec, round(readRatio), round(writeRatio), mem.peakMb, workerMem?.peakMb),
    };
  },
};
