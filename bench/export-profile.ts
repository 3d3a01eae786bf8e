// Profiles one export in-process (run: TEST_DATABASE_URL=… node --cpu-prof --cpu-prof-dir=DIR --import tsx bench/export-profile.ts [rows]).
// Seeds tasks straight in SQL, runs the export runner to completion, prints rows/s and the read round trips.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { sql } from 'kysely';
import { signup } from '../test/helpers/auth.ts';
import { createTestPlatform } from '../test/helpers/test-platform.ts';

const ROWS = Number(process.argv[2] ?? 100_000);
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'plinth-export-profile-'));
const t = await createTestPlatform({ env: { STORAGE_DIR: dir, LOG_LEVEL: 'silent' } });
const owner = await signup(t.app, { organizationName: 'Profile' });
await sql`insert into projects (tenant_id, id, key, name, created_by, task_counter) values (${owner.orgId}, gen_random_uuid(), 'PRF', 'Profile', ${owner.userId}, ${ROWS})`.execute(t.db.owner);
await sql`
  insert into tasks (tenant_id, id, project_id, number, title, status, labels, created_by)
  select p.tenant_id, (lpad(to_hex(1700000000000 + g), 12, '0') || '-7000-8000-' || lpad(to_hex(g), 12, '0'))::uuid,
         p.id, g, 'task number ' || g || ' with a longer title to make the rows realistic',
         (array['todo','in_progress','done','canceled'])[1 + g % 4], array['a','b'], ${owner.userId}
  from projects p, generate_series(1, ${ROWS}) g where p.tenant_id = ${owner.orgId}`.execute(t.db.owner);
await sql`analyze tasks`.execute(t.db.owner);
let reads = 0;
const orig = t.db.withTenantRead.bind(t.db);
(t.db as { withTenantRead: typeof orig }).withTenantRead = (id, fn, o) => {
  reads++;
  return orig(id, fn, o);
};
const res = await t.app.inject({ method: 'POST', url: `/v1/orgs/${owner.orgId}/exports`, headers: owner.auth, payload: { resource: 'tasks', format: 'csv' } });
const started = Date.now();
const windowStart = process.hrtime.bigint() / 1000n;
await t.modules.reporting.runner.kick();
await t.modules.reporting.runner.drain();
const ms = Date.now() - started;
const windowEnd = process.hrtime.bigint() / 1000n;
const e = (await t.app.inject({ url: `/v1/orgs/${owner.orgId}/exports/${res.json().id}`, headers: owner.auth })).json();
console.log(JSON.stringify({ status: e.status, rows: e.rowsDone, bytes: e.bytes, ms, rowsPerSec: Math.round((e.rowsDone * 1000) / ms), readTransactions: reads, profileWindowUs: [String(windowStart), String(windowEnd)], loadavg: os.loadavg().map((x) => x.toFixed(1)) }));
await t.modules.reporting.close();
await t.close();
fs.rmSync(dir, { recursive: true, force: true });
