import pg from 'pg';
import { CompiledQuery, type Kysely } from 'kysely';

/**
 * `COPY (SELECT …) TO STDOUT` on node-postgres without pg-copy-streams: a bounded statement whose output is
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
  /** The last row's bytes as written (a view into body), null when no row was copied. */
  lastRow: Buffer | null;
}

const BLOCK = 256 * 1024;
const COPY_TO_STDOUT = /^\s*copy\s*\([\s\S]*\)\s*to\s+stdout\b/i;

/** Kysely's PostgresCursor over one COPY … TO STDOUT, submitted as a node-postgres Submittable. */
export class CopyOutCursor<T = CopyOutResult> {
  // Rows are copied into blocks of BLOCK bytes (a row larger than that gets a block of its own): no
  // re-copying as the batch grows; the caller joins the blocks once, into the part it uploads.
  private blocks: Buffer[] = [];
  private block = Buffer.allocUnsafe(0);
  private used = 0;
  private lastBlock = -1;
  private lastStart = 0;
  private rows = 0;
  private delivered = false;
  private readonly done: Promise<CopyOutResult>;
  private settle!: { resolve(r: CopyOutResult): void; reject(e: unknown): void };

  constructor(
    private readonly text: string,
    parameters: unknown[],
  ) {
    if (!COPY_TO_STDOUT.test(text)) throw new Error('CopyOutCursor runs only COPY (…) TO STDOUT');
    // COPY takes no bind parameters: copyOut() inlines them as literals first.
    if (parameters.length > 0) throw new Error('COPY takes no parameters');
    this.done = new Promise((resolve, reject) => (this.settle = { resolve, reject }));
    this.done.catch(() => undefined); // surfaced by read()
  }

  // --- node-postgres Submittable (the client routes the connection's messages for this query here) ---
  submit(connection: { query(text: string): void }): void {
    connection.query(this.text);
  }
  handleCopyData(msg: { chunk: Buffer }): void {
    // One CopyData message per row. The chunk is a view into the protocol parser's buffer, which it reuses:
    // copied now (TypedArray#set: a fraction of Buffer#copy's cost per call).
    const chunk = msg.chunk;
    if (this.used + chunk.length > this.block.length) {
      this.seal();
      this.block = Buffer.allocUnsafe(Math.max(BLOCK, chunk.length));
    }
    this.block.set(chunk, this.used);
    this.lastBlock = this.blocks.length;
    this.lastStart = this.used;
    this.used += chunk.length;
  }
  handleCommandComplete(msg: { text: string }): void {
    this.rows = Number(msg.text.split(' ')[1] ?? 0);
  }
  handleReadyForQuery(): void {
    this.seal();
    const last = this.lastBlock >= 0 ? this.blocks[this.lastBlock]!.subarray(this.lastStart) : null;
    this.settle.resolve({ rows: this.rows, body: this.blocks, bytes: this.blocks.reduce((n, b) => n + b.length, 0), lastRow: last });
  }
  private seal(): void {
    if (this.used > 0) this.blocks.push(this.block.subarray(0, this.used));
    this.block = Buffer.allocUnsafe(0);
    this.used = 0;
  }
  handleError(err: unknown): void {
    this.settle.reject(err);
  }
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

/** A bind parameter as a SQL literal (COPY has no parameters). */
function literal(v: unknown): string {
  if (v === null || v === undefined) return 'NULL';
  if (v instanceof Date) return pg.escapeLiteral(v.toISOString());
  if (typeof v === 'string') return pg.escapeLiteral(v);
  if (typeof v === 'number' || typeof v === 'bigint' || typeof v === 'boolean') return pg.escapeLiteral(String(v));
  throw new Error(`COPY: cannot inline a parameter of type ${typeof v}`);
}

/**
 * Runs a compiled `COPY (…) TO STDOUT` in the given connection or transaction (Postgres only: PGlite has no
 * COPY to a client) and returns its whole output. Kysely's bind parameters ($1, $2, …) are inlined as
 * escaped literals (pg's escapeLiteral), as untyped literals like the parameters they replace; the statement
 * text itself must not contain `$<digits>` elsewhere (no dollar quoting), which is checked.
 */
export async function copyOut(db: Pick<Kysely<unknown>, 'getExecutor'>, compiled: CompiledQuery): Promise<CopyOutResult> {
  const used = new Set<number>();
  const text = compiled.sql.replace(/\$(\d+)/g, (_, n: string) => {
    const i = Number(n) - 1;
    if (i < 0 || i >= compiled.parameters.length) throw new Error(`COPY: placeholder $${n} without a parameter`);
    used.add(i);
    return literal(compiled.parameters[i]);
  });
  if (used.size !== compiled.parameters.length) throw new Error('COPY: a parameter has no placeholder');
  for await (const r of db.getExecutor().stream<CopyOutResult>(CompiledQuery.raw(text), 1)) return r.rows[0]!;
  throw new Error('COPY returned no result');
}
