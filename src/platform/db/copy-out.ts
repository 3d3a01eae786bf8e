import type { Connection } from 'pg';
import { to as copyTo, type CopyToStreamQuery } from 'pg-copy-streams';
import { CompiledQuery, type Kysely } from 'kysely';
import { inlineParameters } from './inline.ts';

/**
 * `COPY (SELECT …) TO STDOUT` on node-postgres through pg-copy-streams (`to()`, the protocol: CopyData
 * framing, handing the socket back to pg after CopyDone or an error): a bounded statement whose output is
 * collected whole (exports copy one keyset batch per statement, so there is nothing to stream back-pressure
 * against). Postgres writes CSV in C, quoting included, several times cheaper than building the same text
 * with SQL expressions; RLS applies to COPY of a query as to the query itself.
 *
 * It plugs into Kysely through the Postgres dialect's `cursor` slot (the only way Kysely hands a query object
 * to the connection it holds, so the COPY runs inside the caller's transaction): `copyOut(trx, compiled)`.
 * The slot carries nothing else — Plinth never streams SELECTs through Kysely — and a non-COPY statement is
 * refused rather than run as something else.
 */
export interface CopyOutResult {
  /** Rows copied (the command tag's count). */
  rows: number;
  /** Everything COPY wrote, in order, in blocks. */
  body: Buffer[];
  bytes: number;
  /** The last row's bytes as written, newline included, null when no row was copied. */
  lastRow: Buffer | null;
}

const COPY_TO_STDOUT = /^\s*copy\s*\([\s\S]*\)\s*to\s+stdout\b/i;

/** What node-postgres calls on the query it runs (pg-copy-streams implements them; its typings omit them). */
interface PgQueryCallbacks {
  handleError(err: unknown, connection: unknown): void;
  handleCommandComplete(msg: unknown, connection: unknown): void;
  handleReadyForQuery(connection: unknown): void;
}

/**
 * Kysely's PostgresCursor over one COPY … TO STDOUT. Kysely passes the cursor object itself to
 * `client.query()` and then calls `read(n)` on it, which a Readable cannot be; so the cursor is the
 * Submittable pg sees and forwards everything to the library's stream, whose output it collects.
 */
export class CopyOutCursor<T = Omit<CopyOutResult, 'lastRow'>> {
  private readonly copy: CopyToStreamQuery & PgQueryCallbacks;
  private readonly done: Promise<Omit<CopyOutResult, 'lastRow'>>;
  private ready!: () => void;
  private delivered = false;

  constructor(text: string, parameters: unknown[]) {
    if (!COPY_TO_STDOUT.test(text)) throw new Error('CopyOutCursor runs only COPY (…) TO STDOUT');
    // COPY takes no bind parameters: copyOut() inlines them as literals first.
    if (parameters.length > 0) throw new Error('COPY takes no parameters');
    this.copy = copyTo(text) as CopyToStreamQuery & PgQueryCallbacks;
    const body: Buffer[] = [];
    let bytes = 0;
    // The stream ends at CopyDone; the row count comes with CommandComplete, before ReadyForQuery.
    const ended = new Promise<void>((resolve, reject) => {
      this.copy.on('data', (chunk: Buffer) => {
        body.push(chunk);
        bytes += chunk.length;
      });
      this.copy.on('end', resolve);
      this.copy.on('error', reject);
    });
    const ready = new Promise<void>((resolve) => (this.ready = resolve));
    this.done = Promise.all([ended, ready]).then(() => ({ rows: this.copy.rowCount, body, bytes }));
    this.done.catch(() => undefined); // surfaced by read()
  }

  // --- the Submittable node-postgres runs: the library's ---
  submit(connection: Connection): void {
    this.copy.submit(connection);
  }
  handleError(err: unknown, connection: unknown): void {
    this.copy.handleError(err, connection);
  }
  handleCommandComplete(msg: unknown, connection: unknown): void {
    this.copy.handleCommandComplete(msg, connection);
  }
  handleReadyForQuery(connection: unknown): void {
    this.copy.handleReadyForQuery(connection);
    this.ready();
  }
  // The stream takes every message up to CopyDone: pg only calls these if the text held a second statement
  // (copyOut's callers never build one), which must not throw inside pg's socket handler.
  handleEmptyQuery(): void {}
  handleRowDescription(): void {}
  handleDataRow(): void {}
  handlePortalSuspended(): void {}

  // --- Kysely's PostgresCursor ---
  async read(): Promise<T[]> {
    if (this.delivered) return [];
    this.delivered = true;
    return [(await this.done) as T];
  }
  async close(): Promise<void> {
    await this.done.catch(() => undefined);
  }
}

const NEWLINE = 0x0a;

/**
 * The last record of COPY's CSV output (newline included), found backwards from the end: a newline ends a
 * record when an even number of quote characters follow it (inside a quoted field the count is odd: the
 * field's closing quote plus pairs), so a quoted field's newlines are skipped. The stream's blocks do not
 * follow rows; a record spread over blocks is joined (only that record).
 */
export function lastCsvRecord(body: Buffer[], quote: number): Buffer | null {
  let quotes = 0;
  for (let b = body.length - 1; b >= 0; b--) {
    const block = body[b]!;
    // The output ends with the last record's newline: skipped.
    for (let i = b === body.length - 1 ? block.length - 2 : block.length - 1; i >= 0; i--) {
      const c = block[i];
      if (c === quote) quotes++;
      else if (c === NEWLINE && quotes % 2 === 0) return b === body.length - 1 ? block.subarray(i + 1) : Buffer.concat([block.subarray(i + 1), ...body.slice(b + 1)]);
    }
  }
  // No record boundary: the output is one record.
  return body.length === 0 ? null : body.length === 1 ? body[0]! : Buffer.concat(body);
}

/**
 * Runs a compiled `COPY (…) TO STDOUT` in the given connection or transaction (Postgres only: PGlite has no
 * COPY to a client) and returns its whole output. Kysely's bind parameters ($1, $2, …) are inlined as
 * escaped literals (pg's escapeLiteral), as untyped literals like the parameters they replace; the statement
 * text itself must not contain `$<digits>` elsewhere (no dollar quoting), which is checked.
 * `quote` is the statement's CSV quote character (COPY's default `"`), which finding `lastRow` needs.
 */
export async function copyOut(db: Pick<Kysely<unknown>, 'getExecutor'>, compiled: CompiledQuery, { quote = '"' }: { quote?: string } = {}): Promise<CopyOutResult> {
  if (quote.length !== 1 || quote.charCodeAt(0) > 0x7f) throw new Error('COPY: the quote must be one ASCII character');
  const text = inlineParameters(compiled, 'COPY');
  for await (const { rows } of db.getExecutor().stream<Omit<CopyOutResult, 'lastRow'>>(CompiledQuery.raw(text), 1)) {
    const r = rows[0]!;
    return { ...r, lastRow: lastCsvRecord(r.body, quote.charCodeAt(0)) };
  }
  throw new Error('COPY returned no result');
}
