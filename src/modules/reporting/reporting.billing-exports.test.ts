import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import fc from 'fast-check';
import { sql } from 'kysely';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { signup, type SignedUp } from '../../../test/helpers/auth.ts';
import { createTestPlatform, type TestPlatform } from '../../../test/helpers/test-platform.ts';
import { newId } from '../../platform/ids.ts';
import { csvLines } from './export-format.ts';
import { copyBatch, EXPORT_SOURCES, lineSql, renderBatch, SOURCE_TABLE_NAMES, type ExportSource, type Row } from './export-sources.repo.ts';

/** A one-row source for the field-writer property (only what copyBatch reads). */
const COPY_PROBE = { columns: ['x', 'y', 'n'], text: ['x', 'y'], keyColumns: ['n'], cursorOf: () => '', cursorOfCsvLine: () => '' } as unknown as ExportSource;
import { createExportsRepo } from './exports.repo.ts';
import { createExportRunner, type ExportRunnerDeps } from './exports.runner.ts';

/**
 * The `invoices` and `usage` export resources (billing's invoices and hourly usage rollups, read under RLS),
 * and the Postgres-rendered batches: byte for byte what the Node serializer writes, for every resource.
 */
describe(`reporting: billing exports and rendering in Postgres (${process.env.TEST_DATABASE_URL ? 'postgres' : 'pglite'})`, () => {
  let t: TestPlatform;
  let a: SignedUp;
  let b: SignedUp;
  let dir: string;
  const api = async (who: { auth: Record<string, string> }, method: string, url: string, payload?: object) =>
    t.app.inject({ method: method as 'GET', url, headers: who.auth, ...(payload ? { payload } : {}) });
  const runner = (over: Partial<ExportRunnerDeps> = {}) =>
    createExportRunner({
      repo: createExportsRepo(t.db.scope('reporting_exports', 'reporting_export_jobs')),
      sources: t.db.scope(...SOURCE_TABLE_NAMES),
      storage: t.storage,
      events: t.events,
      logger: pino({ level: 'silent' }),
      config: t.config.reporting,
      getUserEmail: async () => null,
      ...over,
    });
  /** Queues an export, runs it with the given runner, returns the file's text. */
  async function exportFile(who: SignedUp, body: object, render: 'copy' | 'postgres' | 'node' = 'postgres'): Promise<string> {
    const res = await api(who, 'POST', `/v1/orgs/${who.orgId}/exports`, body);
    expect(res.statusCode, res.body).toBe(202);
    const r = runner({ render });
    await r.kick();
    await r.drain();
    const done = (await api(who, 'GET', `/v1/orgs/${who.orgId}/exports/${res.json().id}`)).json();
    expect(done.status, JSON.stringify(done.error)).toBe('succeeded');
    return (await t.app.inject({ url: done.download.url.replace(/^https?:\/\/[^/]+/, '') })).body;
  }
  const ndjson = (text: string) =>
    text
      .trim()
      .split('\n')
      .filter(Boolean)
      .map((l) => JSON.parse(l) as Record<string, unknown>);

  const hour = (h: number) => new Date(Date.UTC(2026, 10, 1, h));
  async function seedInvoice(orgId: string, i: { status: string; number: string | null; seq: number | null; periodStart: Date; total: number }) {
    const end = new Date(i.periodStart.getTime() + 30 * 86_400_000);
    await t.db.withTenant(orgId, (trx) =>
      sql`insert into billing_invoices (tenant_id, id, seq, number, status, reason, currency, period_start, period_end, usage_cutoff,
            subtotal, total, amount_due, amount_paid, finalized_at, paid_at)
          values (${orgId}, ${newId()}, ${i.seq}, ${i.number}, ${i.status}, 'subscription_cycle', 'EUR', ${i.periodStart}, ${end}, ${end},
            ${i.total}, ${i.total}, ${i.status === 'paid' ? 0 : i.total}, ${i.status === 'paid' ? i.total : 0},
            ${i.status === 'draft' ? null : end}, ${i.status === 'paid' ? end : null})`.execute(trx),
    );
  }

  beforeAll(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'plinth-billing-exports-'));
    t = await createTestPlatform({ env: { STORAGE_DIR: dir, EXPORT_BATCH_ROWS: '3' } });
    // Only the runners under test claim exports (the platform's, nudged by each POST, would race them).
    await t.modules.reporting.close();
    a = await signup(t.app, { organizationName: 'Billing exports A' });
    b = await signup(t.app, { organizationName: 'Billing exports B' });
    const statuses = ['draft', 'finalized', 'paid', 'paid', 'void', 'uncollectible', 'paid'];
    let seq = 0;
    for (const [n, status] of statuses.entries()) {
      const draft = status === 'draft';
      if (!draft) seq++;
      await seedInvoice(a.orgId, { status, seq: draft ? null : seq, number: draft ? null : n === 6 ? '=A-"7", x' : `A-${seq}`, periodStart: new Date(Date.UTC(2026, n, 1)), total: 1000 * (n + 1) });
    }
    await seedInvoice(b.orgId, { status: 'paid', seq: 1, number: 'B-1', periodStart: new Date(Date.UTC(2026, 2, 1)), total: 99 });
    for (const metric of ['api.requests', 'storage,gb', 'seats']) {
      for (let h = 0; h < 3; h++) {
        await t.db.withTenant(a.orgId, (trx) =>
          sql`insert into billing_usage_rollups (tenant_id, metric, bucket, count, sum, max, latest_value, latest_at)
              values (${a.orgId}, ${metric}, ${hour(h)}, ${h + 1}, ${`${h}.000000000000000000001`}, ${h + 0.5}, 1, ${hour(h)})`.execute(trx),
        );
      }
    }
    await t.db.withTenant(b.orgId, (trx) =>
      sql`insert into billing_usage_rollups (tenant_id, metric, bucket, count, sum, max, latest_value, latest_at)
          values (${b.orgId}, 'api.requests', ${hour(1)}, 7, 7, 1, 1, ${hour(1)})`.execute(trx),
    );
  }, 120_000);
  afterAll(async () => {
    await t?.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('invoices: every invoice of the org once across keyset batches, filtered by status and period; CSV neutralized', async () => {
    const all = ndjson(await exportFile(a, { resource: 'invoices', format: 'ndjson' }));
    expect(all).toHaveLength(7);
    expect(new Set(all.map((r) => r.id)).size).toBe(7);
    expect(all.map((r) => r.number)).not.toContain('B-1');
    const paid = all.filter((r) => r.status === 'paid');
    expect(paid[0]).toMatchObject({ currency: 'EUR', reason: 'subscription_cycle', amount_due: 0, amount_paid: paid[0]!.total, voided_at: null });
    expect(typeof paid[0]!.total).toBe('number');
    expect(all.find((r) => r.status === 'draft')).toMatchObject({ number: null, finalized_at: null });
    expect(String(all[0]!.period_start)).toMatch(/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/);

    const filtered = ndjson(await exportFile(a, { resource: 'invoices', format: 'ndjson', filters: { status: ['paid', 'void'], from: '2026-03-01T00:00:00Z', to: '2026-07-01T00:00:00Z' } }));
    // paid: months 2, 3 (index 2 is March, 3 is April), 6 (July, outside); void: May.
    expect(filtered.map((r) => [r.status, r.period_start]).sort()).toEqual([
      ['paid', '2026-03-01T00:00:00.000Z'],
      ['paid', '2026-04-01T00:00:00.000Z'],
      ['void', '2026-05-01T00:00:00.000Z'],
    ]);

    const csv = await exportFile(a, { resource: 'invoices', format: 'csv', filters: { status: ['paid'] } });
    const lines = csv.trim().split('\n');
    expect(lines[0]).toBe(
      'id,number,status,reason,subscription_id,currency,period_start,period_end,subtotal,discount_total,tax_total,total,credit_applied,credited,amount_due,amount_paid,created_at,finalized_at,paid_at,voided_at,uncollectible_at',
    );
    expect(lines).toHaveLength(4);
    expect(csv).toContain(`,"'=A-""7"", x",paid,`);

    const other = ndjson(await exportFile(b, { resource: 'invoices', format: 'ndjson' }));
    expect(other.map((r) => r.number)).toEqual(['B-1']);
  });

  it('usage: hourly rollups per metric across composite-key batches, filtered by metric and period; exact decimals', async () => {
    const all = ndjson(await exportFile(a, { resource: 'usage', format: 'ndjson' }));
    expect(all).toHaveLength(9);
    expect(all.map((r) => `${r.metric}@${r.hour}`)).toEqual([...new Set(all.map((r) => `${r.metric}@${r.hour}`))]);
    expect(all[0]).toEqual({ metric: 'api.requests', hour: '2026-11-01T00:00:00.000Z', events: 1, sum: '0.000000000000000000001', max: '0.5' });

    const one = ndjson(await exportFile(a, { resource: 'usage', format: 'ndjson', filters: { metric: 'storage,gb', from: '2026-11-01T01:30:00Z', to: '2026-11-01T03:00:00Z' } }));
    expect(one.map((r) => r.hour)).toEqual(['2026-11-01T01:00:00.000Z', '2026-11-01T02:00:00.000Z']);
    expect(one[1]).toMatchObject({ events: 3, sum: '2.000000000000000000001' });

    const csv = await exportFile(a, { resource: 'usage', format: 'csv', filters: { metric: 'storage,gb' } });
    expect(csv.split('\n').slice(0, 2)).toEqual(['metric,hour,events,sum,max', '"storage,gb",2026-11-01T00:00:00.000Z,1,0.000000000000000000001,0.5']);

    expect(ndjson(await exportFile(b, { resource: 'usage', format: 'ndjson' }))).toEqual([{ metric: 'api.requests', hour: '2026-11-01T01:00:00.000Z', events: 7, sum: '7', max: '1' }]);
  });

  it('RLS: a batch read in the transaction of org A sees none of the invoices or usage of org B, even when asked for B', async () => {
    const scope = t.db.scope(...SOURCE_TABLE_NAMES);
    for (const resource of ['invoices', 'usage']) {
      const source = EXPORT_SOURCES[resource]!;
      const read = (ctx: string, asked: string) =>
        scope.withTenantRead(ctx, (trx) => renderBatch(trx, source, 'csv', source.select(trx, asked, {} as never, null, 100)), { readOnly: true });
      expect((await read(a.orgId, b.orgId)).rows, resource).toBe(0);
      expect((await read(b.orgId, b.orgId)).rows, resource).toBe(1);
      expect((await read(a.orgId, a.orgId)).rows, resource).toBe(resource === 'invoices' ? 7 : 9);
      if (t.db.kind !== 'postgres') continue;
      // COPY of a query is under RLS as the query is.
      const copy = (ctx: string, asked: string) =>
        scope.withTenantRead(ctx, (trx) => copyBatch(trx, source, 'ndjson', source.select(trx, asked, {} as never, null, 100)), { readOnly: true });
      expect((await copy(a.orgId, b.orgId)).rows, resource).toBe(0);
      expect((await copy(b.orgId, b.orgId)).rows, resource).toBe(1);
      expect((await copy(a.orgId, a.orgId)).rows, resource).toBe(resource === 'invoices' ? 7 : 9);
    }
  });

  it('billing resources need billing:read besides exports:manage; bad filters are 400', async () => {
    const key = (await api(a, 'POST', `/v1/orgs/${a.orgId}/api-keys`, { name: 'exports only', scopes: ['exports:manage', 'projects:read'] })).json();
    const bearer = { auth: { authorization: `Bearer ${key.secret}` } };
    expect((await api(bearer, 'POST', `/v1/orgs/${a.orgId}/exports`, { resource: 'invoices', format: 'csv' })).statusCode).toBe(403);
    expect((await api(bearer, 'POST', `/v1/orgs/${a.orgId}/exports`, { resource: 'usage', format: 'csv' })).statusCode).toBe(403);
    const bad = [
      { resource: 'invoices', format: 'csv', filters: { status: ['open'] } },
      { resource: 'invoices', format: 'csv', filters: { from: 'yesterday' } },
      { resource: 'usage', format: 'csv', filters: { metric: '' } },
      { resource: 'usage', format: 'csv', filters: { status: ['paid'] } },
    ];
    for (const body of bad) expect((await api(a, 'POST', `/v1/orgs/${a.orgId}/exports`, body)).statusCode, JSON.stringify(body)).toBe(400);
  });

  // Thirty exports: on real Postgres only (the embedded budget, and COPY); the property below covers the field writer embedded.
  it.skipIf(!process.env.TEST_DATABASE_URL)('a batch copied or rendered by Postgres is byte for byte what the Node serializer writes, for every resource and format', async () => {
    const projectId = (await api(a, 'POST', `/v1/orgs/${a.orgId}/projects`, { key: 'REN', name: '=Render, "quoted"', description: 'two\nlines' })).json().id;
    for (const title of ['@SUM(A1)', 'tab\tinside', 'é ünïcode ✓', 'plain']) {
      expect((await api(a, 'POST', `/v1/orgs/${a.orgId}/projects/${projectId}/tasks`, { title, labels: ['x,y', '-z'] })).statusCode).toBe(201);
    }
    // (audit-events are always serialized in Node: `changes` must be printed as JSON.stringify prints it.)
    for (const resource of ['tasks', 'projects', 'members', 'invoices', 'usage']) {
      for (const format of ['csv', 'ndjson']) {
        const node = await exportFile(a, { resource, format }, 'node');
        const pg = await exportFile(a, { resource, format }, 'postgres');
        const copied = await exportFile(a, { resource, format }, 'copy');
        expect(node.length, `${resource} ${format}`).toBeGreaterThan(0);
        expect(pg, `${resource} ${format} rendered`).toBe(node);
        expect(copied, `${resource} ${format} copied`).toBe(node);
      }
    }
  });

  it('property: the SQL field writer equals the Node one (csv-stringify-checked) and JSON.stringify for any text', async () => {
    const text = fc.oneof(fc.string(), fc.string({ unit: fc.constantFrom('=', '+', '-', '@', '\t', '\r', '\n', '"', ',', "'", 'a', ' ', 'é', '\\', '\u0001') }));
    await fc.assert(
      fc.asyncProperty(fc.option(text, { nil: null }), text, fc.option(fc.integer(), { nil: null }), async (x, y, n) => {
        // Postgres text cannot hold NUL.
        const [cx, cy] = [x?.replaceAll('\0', ''), y.replaceAll('\0', '')];
        const row: Row = { x: cx ?? null, y: cy, n };
        const rendered = async (format: 'csv' | 'ndjson') =>
          (await sql<{ line: string }>`select ${lineSql(format, ['x', 'y', 'n'], ['x', 'y'])} as line from (select ${row.x}::text as x, ${row.y}::text as y, ${row.n}::int as n) as b`.execute(t.db.app)).rows[0]!.line;
        expect(await rendered('csv')).toBe(csvLines(['x', 'y', 'n'], [row]));
        expect(await rendered('ndjson')).toBe(`${JSON.stringify(row)}\n`);
        if (t.db.kind !== 'postgres') return;
        // COPY's CSV writer with the neutralization in SQL, and NDJSON through COPY (Postgres only).
        const inner = sql`select ${row.x}::text as x, ${row.y}::text as y, ${row.n}::int as n`;
        const copied = async (format: 'csv' | 'ndjson') => Buffer.concat((await copyBatch(t.db.app as never, COPY_PROBE, format, inner)).body).toString();
        expect(await copied('csv')).toBe(csvLines(['x', 'y', 'n'], [row]));
        expect(await copied('ndjson')).toBe(`${JSON.stringify(row)}\n`);
      }),
      { numRuns: 150 },
    );
  });
});
