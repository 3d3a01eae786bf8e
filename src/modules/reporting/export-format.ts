import { Transform } from 'node:stream';
import { stringify } from 'csv-stringify';
import { stringify as stringifySync } from 'csv-stringify/sync';
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

/**
 * One batch as bytes (the exports runner's unit: a batch is serialized whole, then joins the part being
 * uploaded). The CSV header goes only at the very start of a file, not at a resumed export's next batch.
 */
export function serializeBatch(format: ExportFormat, columns: string[], rows: Row[], header: boolean): Buffer {
  if (format === 'csv') return Buffer.from(stringifySync(rows, { header, columns, cast: castOpts }));
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
