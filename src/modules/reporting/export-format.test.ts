import { stringify } from 'csv-stringify/sync';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { createSerializer, serializeBatch } from './export-format.ts';
import type { Row } from './export-sources.repo.ts';

const columns = ['id', 'title', 'n', 'flag', 'none'];
const reference = (rows: Row[], header: boolean) =>
  stringify(rows, {
    header,
    columns,
    cast: { string: (v) => (/^[=+\-@\t\r]/.test(v) ? `'${v}` : v), boolean: (b) => (b ? 'true' : 'false') },
  });

describe('export CSV serialization', () => {
  it('writes exactly what csv-stringify writes (quoting, neutralized formulas, null, booleans, numbers)', () => {
    const cell = fc.oneof(fc.string(), fc.constantFrom('=1+1', '+x', '-3', '@a', '\tt', '\rr', 'a,b', 'say "hi"', 'line\nbreak', 'cr\rlf', ''), fc.constant(null));
    const row = fc.record({ id: fc.uuid(), title: cell, n: fc.integer(), flag: fc.boolean(), none: cell });
    fc.assert(
      fc.property(fc.array(row, { maxLength: 20 }), fc.boolean(), (rows, header) => {
        expect(serializeBatch('csv', columns, rows, header).toString()).toBe(reference(rows, header));
      }),
      { numRuns: 150 },
    );
  });

  it('the streamed serializer and the batch serializer agree; NDJSON is a JSON object per line', async () => {
    const rows: Row[] = [{ id: 'a', title: '=x', n: 1, flag: false, none: null }, { id: 'b', title: 'q"q', n: 2, flag: true, none: 'z' }];
    const stream = createSerializer('csv', columns);
    const chunks: Buffer[] = [];
    stream.on('data', (c: Buffer) => chunks.push(Buffer.from(c)));
    for (const r of rows) stream.write(r);
    stream.end();
    await new Promise((r) => stream.on('end', r));
    expect(Buffer.concat(chunks).toString()).toBe(serializeBatch('csv', columns, rows, true).toString());
    expect(serializeBatch('ndjson', columns, rows, false).toString().trim().split('\n').map((l) => JSON.parse(l))).toEqual(rows);
  });
});
