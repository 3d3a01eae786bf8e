import { Transform } from 'node:stream';
import { stringify } from 'csv-stringify';
import type { Row } from './export-sources.repo.ts';

export type ExportFormat = 'csv' | 'ndjson';

export const CONTENT_TYPES: Record<ExportFormat, string> = { csv: 'text/csv', ndjson: 'application/x-ndjson' };

/**
 * Spreadsheets run a cell that starts with = + - @ (or a tab / carriage return, which some strip first) as
 * a formula (CSV injection, OWASP). Such text cells get a leading apostrophe: shown as text, never run.
 */
export function neutralizeCell(value: string): string {
  return /^[=+\-@\t\r]/.test(value) ? `'${value}` : value;
}

const castOpts = { string: neutralizeCell, boolean: (b: boolean) => (b ? 'true' : 'false') };

const QUOTE = /[",\r\n]/;

/** One CSV field as csv-stringify writes it with the options above (RFC 4180 quoting; checked against it in export-format.test.ts). */
function csvField(v: Row[string] | undefined): string {
  if (v === null || v === undefined) return '';
  const s = typeof v === 'string' ? neutralizeCell(v) : typeof v === 'boolean' ? (v ? 'true' : 'false') : String(v);
  return QUOTE.test(s) ? `"${s.replaceAll('"', '""')}"` : s;
}

/**
 * Rows as CSV lines. Exports serialize millions of rows: csv-stringify's per-record machinery cost about 3.5×
 * this loop (the exporter's largest CPU cost), so the export path writes the same bytes itself; csv-stringify
 * stays the reference it is property-tested against and writes the streamed form below.
 */
export function csvLines(columns: string[], rows: Row[]): string {
  let out = '';
  for (const row of rows) {
    let line = '';
    for (let i = 0; i < columns.length; i++) line += i === 0 ? csvField(row[columns[i]!]) : `,${csvField(row[columns[i]!])}`;
    out += `${line}\n`;
  }
  return out;
}

/**
 * One batch as bytes (the exports runner's unit: a batch is serialized whole, then joins the part being
 * uploaded). The CSV header goes only at the very start of a file, not at a resumed export's next batch.
 */
export function serializeBatch(format: ExportFormat, columns: string[], rows: Row[], header: boolean): Buffer {
  if (format === 'csv') return Buffer.from((header ? `${columns.map((c) => csvField(c)).join(',')}\n` : '') + csvLines(columns, rows));
  let out = '';
  for (const row of rows) out += `${JSON.stringify(row)}\n`;
  return Buffer.from(out);
}

/** An object-mode writable side (rows) and a byte readable side, with backpressure, for one format. */
export function createSerializer(format: ExportFormat, columns: string[]): Transform {
  if (format === 'csv') {
    return stringify({
      header: true,
      columns,
      cast: castOpts,
    });
  }
  return new Transform({
    writableObjectMode: true,
    transform(row: Row, _enc, done) {
      done(null, `${JSON.stringify(row)}\n`);
    },
  });
}
