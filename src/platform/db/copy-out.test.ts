import fc from 'fast-check';
import { Kysely, PostgresDialect, sql } from 'kysely';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { copyOut, CopyOutCursor, lastCsvRecord } from './copy-out.ts';

/** One CSV field the way COPY quotes it (a field with the quote, the delimiter, CR or LF). */
const field = (s: string, quote = '"') => (/[",\r\n]/.test(s) ? `${quote}${s.replaceAll(quote, quote + quote)}${quote}` : s);

describe('lastCsvRecord', () => {
  it('property: the last record of CSV output in arbitrary blocks, quoted newlines and quotes included', () => {
    const text = fc.string({ unit: fc.constantFrom('a', ',', '"', '\n', '\r', 'é', ' ') });
    fc.assert(
      fc.property(fc.array(fc.array(text, { minLength: 1, maxLength: 3 }), { minLength: 1, maxLength: 5 }), fc.array(fc.nat(), { maxLength: 4 }), (records, cuts) => {
        const lines = records.map((r) => `${r.map((f) => field(f)).join(',')}\n`);
        const all = Buffer.from(lines.join(''));
        const at = [...new Set(cuts.map((c) => c % all.length))].sort((x, y) => x - y);
        const body = [0, ...at].map((from, i) => all.subarray(from, at[i] ?? all.length)).filter((b) => b.length > 0);
        expect(lastCsvRecord(body, 0x22)?.toString()).toBe(lines.at(-1));
      }),
      { numRuns: 500 },
    );
  });

  it('no output: no last record', () => {
    expect(lastCsvRecord([], 0x22)).toBeNull();
  });
});

/** COPY … TO STDOUT through pg-copy-streams in the Kysely cursor slot, on a real server (PGlite has no COPY to a client). */
describe.skipIf(!process.env.TEST_DATABASE_URL)('copyOut (postgres)', () => {
  let pool: pg.Pool;
  let db: Kysely<unknown>;
  beforeAll(() => {
    // One connection: a failed COPY must hand it back usable.
    pool = new pg.Pool({ connectionString: process.env.TEST_DATABASE_URL, max: 1 });
    db = new Kysely({ dialect: new PostgresDialect({ pool, cursor: CopyOutCursor }) });
  });
  afterAll(() => db.destroy());

  it('copies the whole output in the caller transaction: rows, bytes, the last row over several blocks', async () => {
    // A last row of ~600 KB with quoted newlines and quotes: more than one socket read, so several blocks.
    const big = 'x"y\n'.repeat(150_000);
    const r = await db.transaction().execute(async (trx) => {
      await sql`set local application_name = 'copy-out-test'`.execute(trx);
      const q = sql`copy (select n, case when n = 3000 then ${big} else current_setting('application_name') end
                          from generate_series(1, 3000) as n order by n) to stdout with (format csv)`;
      return copyOut(trx, q.compile(trx));
    });
    const out = Buffer.concat(r.body).toString();
    const expected = Array.from({ length: 3000 }, (_, i) => `${i + 1},${i === 2999 ? field(big) : 'copy-out-test'}\n`);
    expect(r.rows).toBe(3000);
    expect(r.body.length).toBeGreaterThan(1);
    expect(r.bytes).toBe(Buffer.byteLength(out));
    expect(out).toBe(expected.join(''));
    expect(r.lastRow?.toString()).toBe(expected.at(-1));
  });

  it('inlines parameters as literals and honours another quote character; no rows: no last row', async () => {
    const q = sql`copy (select ${'a"b\nc'}::text as t, ${7}::int as n) to stdout with (format csv, quote e'\\x01')`;
    const r = await copyOut(db, q.compile(db), { quote: '\u0001' });
    expect(r.rows).toBe(1);
    expect(r.lastRow?.toString()).toBe('\u0001a"b\nc\u0001,7\n');
    const none = await copyOut(db, sql`copy (select 1 where false) to stdout`.compile(db));
    expect(none).toMatchObject({ rows: 0, body: [], bytes: 0, lastRow: null });
  });

  it('an error mid-copy rejects and leaves the connection usable', async () => {
    const failing = sql`copy (select 1 / (5000 - n) from generate_series(1, 10000) as n) to stdout`;
    await expect(db.transaction().execute((trx) => copyOut(trx, failing.compile(trx)))).rejects.toThrow(/division by zero/);
    expect((await sql<{ one: number }>`select 1 as one`.execute(db)).rows).toEqual([{ one: 1 }]);
  });

  it('refuses anything but COPY … TO STDOUT, and a parameter without its placeholder', async () => {
    await expect(copyOut(db, sql`select 1`.compile(db))).rejects.toThrow(/only COPY/);
    await expect(copyOut(db, sql`copy (select 1) to '/tmp/x'`.compile(db))).rejects.toThrow(/only COPY/);
    const compiled = sql`copy (select 1) to stdout`.compile(db);
    await expect(copyOut(db, { ...compiled, parameters: [1] })).rejects.toThrow(/no placeholder/);
  });
});
