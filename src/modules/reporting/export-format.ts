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

/** An object-mode writable side (rows) and a byte readable side, with backpressure, for one format. */
export function createSerializer(format: ExportFormat, columns: string[]): Transform {
  if (format === 'csv') {
    return stringify({
      header: true,
      columns,
      cast: { string: neutralizeCell, boolean: (b) => (b ? 'true' : 'false') },
    });
  }
  return new Transform({
    writableObjectMode: true,
    transform(row: Row, _enc, done) {
      done(null, `${JSON.stringify(row)}\n`);
    },
  });
}
