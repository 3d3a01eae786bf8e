// One process, one seeded org, alternating exports: rows serialized in Node ('node'), batches rendered by SQL
// expressions ('postgres') and batches copied out ('copy', COPY … TO STDOUT: what the module uses on Postgres)
// — an A/B/C under equal load on a shared machine.
//   TEST_DATABASE_URL=… node [--cpu-prof --cpu-prof-dir=DIR] --import tsx bench/export-profile.ts [rows] [--rounds N]
//     [--batch ROWS[,ROWS…]] [--modes node,postgres,copy] [--format csv|ndjson] [--shuffled] [--out FILE.json]
// Seeds tasks straight in SQL; prints, per export: rows/s, this process's CPU ms, peak RSS and heap over the
// run's start (sampled every 100 ms), read transactions. A CPU profile covers every run (profileWindowUs).
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { sql } from 'kysely';
import { pino } from 'pino';
import { signup } from '../test/helpers/auth.ts';
import { createTestPlatform } from '../test/helpers/test-platform.ts';
import { SOURCE_TABLE_NAMES } from '../src/modules/reporting/export-sources.repo.ts';
import { createExportsRepo } from '../src/modules/reporting/exports.repo.ts';
import { createExportRunner } from '../src/modules/reporting/exports.runner.ts';

const args = process.argv.slice(2);
const opt = (name: string, dflt: string) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? args[i + 1]! : dflt;
};
const ROWS = Number(args[0] && !args[0].startsWith('--') ? args[0] : 200_000);
const ROUNDS = Number(opt('rounds', '2'));
// Several sizes (--batch 5000,25000): each round exports once per mode and size, alternating (an A/B in one process).
const BATCHES = opt('batch', '5000').split(',').map(Number);
const MODES = opt('modes', 'node,postgres,copy').split(',') as Array<'node' | 'postgres' | 'copy'>;
const FORMAT = opt('format', 'csv');
const OUT = opt('out', '');
const SHUFFLED = args.includes('--shuffled');

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'plinth-export-profile-'));
const t = await createTestPlatform({ env: { STORAGE_DIR: dir, LOG_LEVEL: 'silent' } });
await t.modules.reporting.close(); // only the runners below claim exports
const owner = await signup(t.app, { organizationName: 'Profile' });
await sql`insert into projects (tenant_id, id, key, name, created_by, task_counter) values (${owner.orgId}, gen_random_uuid(), 'PRF', 'Profile', ${owner.userId}, ${ROWS})`.execute(t.db.owner);
await sql`
  insert into tasks (tenant_id, id, project_id, number, title, description, status, labels, created_by)
  select p.tenant_id,
         -- --shuffled: UUIDv7 ids from a random instant of the last year, as the bench's seeder makes them, so id
         -- (keyset) order is not the heap's order and every batch reads its rows from pages all over the table.
         (case when ${SHUFFLED} then lpad(to_hex((1700000000000 + floor(random() * 31536000000))::bigint), 12, '0') || '-7' || substr(md5(g::text), 1, 3) || '-8' || substr(md5(g::text), 4, 3) || '-' || substr(md5(g::text), 7, 12)
               else lpad(to_hex(1700000000000 + g), 12, '0') || '-7000-8000-' || lpad(to_hex(g), 12, '0') end)::uuid,
         p.id, g, 'task number ' || g || ' with a longer title to make the rows realistic',
         'Seeded task ' || g || ': the flow needs attention before the next release.',
         (array['todo','in_progress','done','canceled'])[1 + g % 4], array['a','b'], ${owner.userId}
  from projects p, generate_series(1, ${ROWS}) g where p.tenant_id = ${owner.orgId}`.execute(t.db.owner);
await sql`analyze tasks`.execute(t.db.owner);

const sources = t.db.scope(...SOURCE_TABLE_NAMES);
let reads = 0;
let readMs = 0;
// The database side's CPU: the backends that ran the batch reads (Postgres only; /proc of the local server).
const backends = new Set<number>();
const cpuTicks = (pid: number) => {
  try {
    const f = fs.readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
    return Number(f[11]) + Number(f[12]);
  } catch {
    return 0;
  }
};
const backendCpu = () => new Map([...backends].map((p) => [p, cpuTicks(p)]));
const counted: typeof sources = {
  ...sources,
  withTenantRead: async (id, fn, o) => {
    reads++;
    const t0 = performance.now();
    try {
      return await sources.withTenantRead(
      id,
      async (trx) => {
        if (t.db.kind === 'postgres') backends.add((await sql<{ pid: number }>`select pg_backend_pid() as pid`.execute(trx)).rows[0]!.pid);
        return fn(trx);
      },
      o,
    );
    } finally {
      readMs += performance.now() - t0;
    }
  },
};
// Time spent in the storage port's part uploads (the runner awaits them; reads may overlap).
let uploadMs = 0;
const timedStorage: typeof t.storage = {
  ...t.storage,
  uploadPart: async (state, part) => {
    const t0 = performance.now();
    try {
      return await t.storage.uploadPart(state, part);
    } finally {
      uploadMs += performance.now() - t0;
    }
  },
};
const results: object[] = [];
const first = process.hrtime.bigint() / 1000n;
for (let round = 1; round <= ROUNDS; round++) {
  for (const [mode, batchRows] of MODES.flatMap((m) => BATCHES.map((b) => [m, b] as const))) {
    const runner = createExportRunner({
      repo: createExportsRepo(t.db.scope('reporting_exports', 'reporting_export_jobs')),
      sources: counted,
      storage: timedStorage,
      events: t.events,
      logger: pino({ level: 'silent' }),
      config: { ...t.config.reporting, exportBatchRows: batchRows },
      getUserEmail: async () => null,
      render: mode,
    });
    const res = await t.app.inject({ method: 'POST', url: `/v1/orgs/${owner.orgId}/exports`, headers: owner.auth, payload: { resource: 'tasks', format: FORMAT } });
    global.gc?.();
    const base = process.memoryUsage();
    let rss = base.rss;
    let heap = base.heapUsed;
    const sampler = setInterval(() => {
      const m = process.memoryUsage();
      rss = Math.max(rss, m.rss);
      heap = Math.max(heap, m.heapUsed);
    }, 100);
    reads = 0;
    readMs = 0;
    uploadMs = 0;
    const cpu0 = process.cpuUsage();
    const db0 = backendCpu();
    const started = performance.now();
    await runner.kick();
    await runner.drain();
    const ms = performance.now() - started;
    const cpu = process.cpuUsage(cpu0);
    const dbTicks = [...backendCpu()].reduce((a, [pid, ticks]) => a + ticks - (db0.get(pid) ?? 0), 0);
    clearInterval(sampler);
    const e = (await t.app.inject({ url: `/v1/orgs/${owner.orgId}/exports/${res.json().id}`, headers: owner.auth })).json();
    const r = {
      round,
      mode,
      format: FORMAT,
      batchRows,
      status: e.status,
      rows: e.rowsDone,
      mib: Math.round((e.bytes / 2 ** 20) * 10) / 10,
      ms: Math.round(ms),
      rowsPerSec: Math.round((e.rowsDone * 1000) / ms),
      nodeCpuMs: Math.round((cpu.user + cpu.system) / 1000),
      // clock ticks are 10 ms
      dbCpuMs: t.db.kind === 'postgres' ? dbTicks * 10 : null,
      peakRssGrowthMb: Math.round((rss - base.rss) / 2 ** 20),
      peakHeapGrowthMb: Math.round((heap - base.heapUsed) / 2 ** 20),
      rssMb: Math.round(rss / 2 ** 20),
      readTransactions: reads,
      // Summed durations: the batch reads (transactions) and the part uploads; they overlap with read-ahead.
      readMs: Math.round(readMs),
      uploadMs: Math.round(uploadMs),
      loadavg: os.loadavg().map((x) => Number(x.toFixed(1))),
    };
    console.log(JSON.stringify(r));
    results.push(r);
    await t.storage.delete(`exports/${owner.orgId}/${e.id}.${FORMAT}`).catch(() => undefined);
  }
}
const last = process.hrtime.bigint() / 1000n;
console.log(JSON.stringify({ profileWindowUs: [String(first), String(last)] }));
if (OUT) fs.writeFileSync(OUT, `${JSON.stringify({ at: new Date().toISOString(), rows: ROWS, machine: { cpus: os.cpus().length, node: process.version }, uptime: fs.readFileSync('/proc/loadavg', 'utf8').trim(), results }, null, 2)}\n`);
await t.close();
fs.rmSync(dir, { recursive: true, force: true });
