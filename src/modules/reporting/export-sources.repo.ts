import { Type, type Static, type TSchema } from '@sinclair/typebox';
import { sql, type Expression, type RawBuilder, type Transaction } from 'kysely';
import type { DB } from '../../platform/db/database.ts';
import { copyOut } from '../../platform/db/copy-out.ts';

/**
 * What exports read: keyset batches of the org's rows, under RLS. These are read-only projections of tables
 * other modules own (projects, tenancy, identity, audit, billing): the reporting context reads them in READ
 * ONLY transactions on a replica, never writes them, and depends on no more of them than the columns listed
 * here (the same exception the rebuild command and the billing reports make).
 */
export type SourceTables = Pick<DB, 'tasks' | 'projects' | 'memberships' | 'users' | 'audit_events' | 'billing_invoices' | 'billing_usage_rollups'>;
/** The tables of the source scope (`db.scope(...SOURCE_TABLE_NAMES)`). */
export const SOURCE_TABLE_NAMES = ['tasks', 'projects', 'memberships', 'users', 'audit_events', 'billing_invoices', 'billing_usage_rollups'] as const;
type Tx = Transaction<SourceTables>;
export type Row = Record<string, string | number | boolean | null>;

/**
 * One exportable resource. `select` is the keyset batch: exactly `columns` (named so, already formatted as
 * exported: timestamps as ISO text, lists joined), in keyset order, rows after the cursor, at most `limit`.
 * The runner either renders a batch in Postgres (`renderBatch`: one row holding the batch's CSV/NDJSON
 * text) or reads the rows and serializes them in Node (`rows: 'node'` sources, and the A/B comparison);
 * both write the same bytes (reporting.billing-exports.test.ts).
 */
export interface ExportSource<F extends TSchema = TSchema> {
  resource: string;
  /** Besides exports:manage, what the caller must hold to export this resource. */
  permission: string;
  columns: string[];
  /** Free-text columns: CSV-quoted and formula-neutralized when needed. The others (ids, numbers, ISO
   * timestamps, booleans, fixed enums) never contain a quote, comma, line break or leading formula sign. */
  text: string[];
  /** Integer columns that node-postgres returns as strings (bigint): numbers in the Node-rendered rows. */
  ints?: string[];
  filters: F;
  select(trx: Tx, tenantId: string, filters: Static<F>, after: string | null, limit: number): Expression<unknown>;
  /** The keyset's columns, in order (the batch's order, made explicit wherever rows are aggregated or copied). */
  keyColumns: string[];
  /** The cursor of a batch row: in SQL over `b` (the rendered path's last key), and from a Node row. */
  cursorSql: RawBuilder<unknown>;
  cursorOf(row: Row): string;
  /** The cursor from a batch's last CSV record as written (the COPY path); absent: CSV is not copied. */
  cursorOfCsvLine?(line: Buffer): string;
  /** 'node': rows are always serialized in Node (a column Postgres cannot print the way the export must). */
  render?: 'node';
  /** Per-row fix-up on the Node path. */
  map?(row: Record<string, unknown>): Row;
  count(trx: Tx, tenantId: string, filters: Static<F>): Promise<number>;
}

/** A timestamptz as JavaScript's toISOString() prints it (UTC, milliseconds, Z), formatted by Postgres. */
const isoText = (col: RawBuilder<unknown> | ReturnType<typeof sql.ref>) => sql<string | null>`to_char(${col} at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')`;
const iso = (col: string) => isoText(sql.ref(col));
const Id = Type.String({ format: 'uuid' });
const DateTime = Type.String({ format: 'date-time' });
const byId = {
  keyColumns: ['id'],
  cursorSql: sql`b.id::text`,
  cursorOf: (r: Row) => String(r.id),
  // id is the first column and a UUID, which CSV never quotes.
  cursorOfCsvLine: (line: Buffer) => line.subarray(0, line.indexOf(',')).toString(),
};

// --- rendering in Postgres -------------------------------------------------------------------------------

/**
 * One CSV field of a free-text column, exactly as csvField writes it (neutralized, then RFC 4180 quoted).
 * ascii()/strpos() rather than regular expressions: a third less database time per batch (measured).
 */
function csvTextSql(col: RawBuilder<unknown>): RawBuilder<string> {
  // = + - @ tab CR, by the first character's code point (ascii(): no text built per field).
  const formula = sql`ascii(${col}) in (61, 43, 45, 64, 9, 13)`;
  const quote = sql`(strpos(${col}, '"') > 0 or strpos(${col}, ',') > 0 or strpos(${col}, chr(10)) > 0 or strpos(${col}, chr(13)) > 0)`;
  return sql<string>`(case
    when ${col} is null then ''
    when ${formula} then
      case when ${quote} then '"''' || replace(${col}, '"', '""') || '"' else '''' || ${col} end
    when ${quote} then '"' || replace(${col}, '"', '""') || '"'
    else ${col} end)`;
}

/** A batch's rendered line expression over `b`: a CSV record or a JSON object, each ending in a newline. */
export function lineSql(format: 'csv' | 'ndjson', columns: string[], text: string[]): RawBuilder<string> {
  if (format === 'ndjson') return sql<string>`row_to_json(b)::text || chr(10)`;
  // One concat() call per line (NULL prints as ''): a chain of || copied the growing line at every step.
  // Other columns are cast to text first (concat would print a boolean as t/f).
  const fields = columns.map((c) => {
    const ref = sql.ref(`b.${c}`);
    return text.includes(c) ? csvTextSql(sql`${ref}::text`) : sql`${ref}::text`;
  });
  return sql<string>`concat(${sql.join(fields, sql`, ',', `)}, chr(10))`;
}

export interface RenderedBatch {
  rows: number;
  /** The batch's CSV (no header) or NDJSON text. */
  body: string;
  /** The cursor of its last row (null: no rows). */
  after: string | null;
}

/**
 * One keyset batch rendered by Postgres as a single text value: the formatting the export needs (ISO times,
 * CSV quoting, formula neutralization, JSON) is done by the database next to the rows, and Node receives one
 * string per batch instead of parsing thousands of row objects and printing them again: the exporting
 * process's memory stays flat and its CPU per row is about halved; the database does that work instead, so
 * total CPU per row is about the same (bench/export-profile.ts, the module README's "Performance").
 */
export async function renderBatch(trx: Tx, source: ExportSource, format: 'csv' | 'ndjson', inner: Expression<unknown>): Promise<RenderedBatch> {
  const line = lineSql(format, source.columns, source.text);
  // The aggregates are told the keyset order: without ORDER BY, an aggregate's input order is whatever the
  // plan produces (the subquery's ORDER BY usually survives, but nothing guarantees it). Sorting an already
  // sorted batch is cheap in memory; this path serves PGlite and usage CSV (Postgres copies the others).
  const asc = sql.join(source.keyColumns.map((c) => sql.ref(`b.${c}`)));
  const desc = sql.join(source.keyColumns.map((c) => sql`${sql.ref(`b.${c}`)} desc`));
  const r = await sql<{ n: number; body: string | null; after: string | null }>`
    select count(*)::int as n,
           string_agg(${line}, '' order by ${asc}) as body,
           (array_agg(${source.cursorSql} order by ${desc}))[1] as after
    from (${inner}) as b`.execute(trx);
  const row = r.rows[0]!;
  return { rows: Number(row.n), body: row.body ?? '', after: row.after };
}

/** Whether a batch of this source can be copied (`copyBatch`) in this format. */
export const canCopy = (source: ExportSource, format: 'csv' | 'ndjson') => source.render !== 'node' && (format === 'ndjson' || source.cursorOfCsvLine !== undefined);

/**
 * A free-text column as COPY's CSV writer needs it: formula-neutralized here, quoted by COPY (the RFC 4180
 * rule csvField applies: a field with a quote, comma, CR or LF). An empty string is sent as NULL: Plinth's
 * CSV prints both as an empty field, COPY would print '' as "".
 */
function copyTextSql(col: RawBuilder<unknown>): RawBuilder<string> {
  // ascii() of the first character (its code point; 0 for '') rather than left(): no text built per field.
  return sql<string>`(case when ascii(${col}) in (61, 43, 45, 64, 9, 13) then '''' || ${col} else nullif(${col}, '') end)`;
}

export interface CopiedBatch {
  rows: number;
  /** The batch's CSV records (no header) or NDJSON lines, as COPY wrote them (in blocks). */
  body: Buffer[];
  bytes: number;
  /** The cursor of its last row (null: no rows). */
  after: string | null;
}

/** NDJSON through COPY's CSV mode: a delimiter and quote character (0x02, 0x01) that JSON text never holds
 * unescaped, so nothing is quoted and each line is row_to_json's text as is. */
const NDJSON_QUOTE = '\x01';
const NDJSON_COPY_OPTIONS = sql.raw(`format csv, delimiter e'\\x02', quote e'\\x01'`);

/**
 * One keyset batch through `COPY (SELECT …) TO STDOUT` (Postgres only, `canCopy` sources): the database
 * formats the batch in C — CSV quoting by COPY itself — instead of evaluating a string expression per field
 * and aggregating the batch into one value, and Node receives the bytes it writes to the file. Same bytes as
 * renderBatch and the Node serializer (reporting.billing-exports.test.ts compares them on Postgres).
 */
export async function copyBatch(trx: Tx, source: ExportSource, format: 'csv' | 'ndjson', inner: Expression<unknown>): Promise<CopiedBatch> {
  const order = sql.join(source.keyColumns.map((c) => sql.ref(`b.${c}`)));
  const fields =
    format === 'ndjson'
      ? sql`row_to_json(b)::text`
      : sql.join(
          source.columns.map((c) => {
            const ref = sql`${sql.ref(`b.${c}`)}::text`;
            return source.text.includes(c) ? copyTextSql(ref) : ref;
          }),
        );
  const options = format === 'ndjson' ? NDJSON_COPY_OPTIONS : sql.raw('format csv');
  const compiled = sql`copy (select ${fields} from (${inner}) as b order by ${order}) to stdout with (${options})`.compile(trx);
  const r = await copyOut(trx, compiled, { quote: format === 'ndjson' ? NDJSON_QUOTE : '"' });
  let after: string | null = null;
  if (r.lastRow) {
    const line = r.lastRow.subarray(0, r.lastRow.length - 1); // without its newline
    after = format === 'ndjson' ? source.cursorOf(JSON.parse(line.toString()) as Row) : source.cursorOfCsvLine!(line);
  }
  return { rows: r.rows, body: r.body, bytes: r.bytes, after };
}

/** The same batch as rows (the Node path): ints made numbers, the source's fix-up applied. */
export async function readRows(trx: Tx, source: ExportSource, inner: Expression<unknown>): Promise<Row[]> {
  const r = await sql<Record<string, unknown>>`${inner}`.execute(trx);
  const ints = source.ints ?? [];
  return r.rows.map((raw) => {
    for (const c of ints) if (raw[c] !== null && raw[c] !== undefined) raw[c] = Number(raw[c]);
    return source.map ? source.map(raw) : (raw as Row);
  });
}

// --- the resources ---------------------------------------------------------------------------------------

const TaskFilters = Type.Object(
  {
    projectId: Type.Optional(Id),
    status: Type.Optional(Type.Array(Type.Union(['todo', 'in_progress', 'done', 'canceled'].map((s) => Type.Literal(s))), { minItems: 1, maxItems: 4 })),
  },
  { additionalProperties: false },
);

const tasks: ExportSource<typeof TaskFilters> = {
  resource: 'tasks',
  permission: 'projects:read',
  columns: ['id', 'key', 'project_id', 'number', 'title', 'status', 'priority', 'assignee_id', 'labels', 'due_date', 'created_at', 'updated_at'],
  text: ['key', 'title', 'labels'],
  ints: ['number'],
  filters: TaskFilters,
  ...byId,
  select(trx, tenantId, f, after, limit) {
    // Formatted by Postgres (ISO timestamps, the key, the label list).
    let q = trx
      .selectFrom('tasks as t')
      .innerJoin('projects as p', (j) => j.onRef('p.tenant_id', '=', 't.tenant_id').onRef('p.id', '=', 't.project_id'))
      .select([
        't.id',
        sql<string>`p.key || '-' || t.number`.as('key'),
        't.project_id',
        't.number',
        't.title',
        't.status',
        't.priority',
        't.assignee_id',
        sql<string>`array_to_string(t.labels, ';')`.as('labels'),
        sql<string | null>`t.due_date::text`.as('due_date'),
        iso('t.created_at').as('created_at'),
        iso('t.updated_at').as('updated_at'),
      ])
      .where('t.tenant_id', '=', tenantId);
    if (after) q = q.where('t.id', '>', after);
    if (f.projectId) q = q.where('t.project_id', '=', f.projectId);
    if (f.status) q = q.where('t.status', 'in', f.status);
    return q.orderBy('t.id').limit(limit);
  },
  async count(trx, tenantId, f) {
    let q = trx.selectFrom('tasks').select((e) => e.fn.countAll<number>().as('n')).where('tenant_id', '=', tenantId);
    if (f.projectId) q = q.where('project_id', '=', f.projectId);
    if (f.status) q = q.where('status', 'in', f.status);
    return Number((await q.executeTakeFirstOrThrow()).n);
  },
};

const ProjectFilters = Type.Object({ archived: Type.Optional(Type.Boolean()) }, { additionalProperties: false });

const projects: ExportSource<typeof ProjectFilters> = {
  resource: 'projects',
  permission: 'projects:read',
  columns: ['id', 'key', 'name', 'description', 'archived', 'created_by', 'created_at', 'updated_at'],
  text: ['key', 'name', 'description'],
  filters: ProjectFilters,
  ...byId,
  select(trx, tenantId, f, after, limit) {
    let q = trx
      .selectFrom('projects')
      .select(['id', 'key', 'name', 'description', 'archived', 'created_by', iso('created_at').as('created_at'), iso('updated_at').as('updated_at')])
      .where('tenant_id', '=', tenantId);
    if (after) q = q.where('id', '>', after);
    if (f.archived !== undefined) q = q.where('archived', '=', f.archived);
    return q.orderBy('id').limit(limit);
  },
  async count(trx, tenantId, f) {
    let q = trx.selectFrom('projects').select((e) => e.fn.countAll<number>().as('n')).where('tenant_id', '=', tenantId);
    if (f.archived !== undefined) q = q.where('archived', '=', f.archived);
    return Number((await q.executeTakeFirstOrThrow()).n);
  },
};

const MemberFilters = Type.Object(
  { role: Type.Optional(Type.Union(['owner', 'admin', 'member', 'viewer', 'billing'].map((s) => Type.Literal(s)))) },
  { additionalProperties: false },
);

const members: ExportSource<typeof MemberFilters> = {
  resource: 'members',
  permission: 'members:read',
  columns: ['id', 'user_id', 'email', 'name', 'role', 'joined_at'],
  text: ['email', 'name', 'role'],
  filters: MemberFilters,
  ...byId,
  select(trx, tenantId, f, after, limit) {
    let q = trx
      .selectFrom('memberships as m')
      .innerJoin('users as u', 'u.id', 'm.user_id')
      .select(['m.id', 'm.user_id', 'u.email', 'u.name', 'm.role', iso('m.created_at').as('joined_at')])
      .where('m.tenant_id', '=', tenantId);
    if (after) q = q.where('m.id', '>', after);
    if (f.role) q = q.where('m.role', '=', f.role);
    return q.orderBy('m.id').limit(limit);
  },
  async count(trx, tenantId, f) {
    let q = trx.selectFrom('memberships').select((e) => e.fn.countAll<number>().as('n')).where('tenant_id', '=', tenantId);
    if (f.role) q = q.where('role', '=', f.role);
    return Number((await q.executeTakeFirstOrThrow()).n);
  },
};

const AuditFilters = Type.Object(
  {
    from: Type.Optional(DateTime),
    to: Type.Optional(DateTime),
    action: Type.Optional(Type.String({ minLength: 1, maxLength: 100 })),
    afterSeq: Type.Optional(
      Type.Integer({ minimum: 0, description: 'Resume a stream: only chained events with seq > afterSeq (the last seq a SIEM received)' }),
    ),
  },
  { additionalProperties: false },
);

const AUDIT_COLUMNS = ['id', 'seq', 'occurred_at', 'actor_type', 'actor_id', 'actor_user_id', 'action', 'target_type', 'target_id', 'request_id', 'ip', 'changes', 'pd_ref', 'prev_hash', 'hash'] as const;

const auditEvents: ExportSource<typeof AuditFilters> = {
  resource: 'audit-events',
  permission: 'audit:read',
  // The chain fields (seq, prev_hash, hash, pd_ref) are exported with the hashed content, so the customer can
  // verify the chain offline (recipe: src/modules/audit/README.md, "Verify an export").
  columns: [...AUDIT_COLUMNS],
  text: ['actor_type', 'actor_id', 'action', 'target_type', 'target_id', 'request_id', 'ip', 'changes', 'pd_ref'],
  ints: ['seq'],
  filters: AuditFilters,
  ...byId,
  // `changes` is exported as JSON.stringify prints it (compact); Postgres prints jsonb with spaces, so the
  // audit export stays on the Node path (audit exports are small next to task exports).
  render: 'node',
  map: (r) => ({ ...(r as Row), changes: JSON.stringify(r.changes) }),
  select(trx, tenantId, f, after, limit) {
    let q = trx
      .selectFrom('audit_events')
      .select(AUDIT_COLUMNS.map((c) => (c === 'occurred_at' ? iso('occurred_at').as('occurred_at') : c)))
      .where('tenant_id', '=', tenantId);
    if (after) q = q.where('id', '>', after);
    if (f.afterSeq !== undefined) q = q.where('seq', '>', f.afterSeq);
    if (f.from) q = q.where('occurred_at', '>=', new Date(f.from));
    if (f.to) q = q.where('occurred_at', '<', new Date(f.to));
    if (f.action) q = q.where('action', '=', f.action);
    return q.orderBy('id').limit(limit);
  },
  async count(trx, tenantId, f) {
    let q = trx.selectFrom('audit_events').select((e) => e.fn.countAll<number>().as('n')).where('tenant_id', '=', tenantId);
    if (f.from) q = q.where('occurred_at', '>=', new Date(f.from));
    if (f.to) q = q.where('occurred_at', '<', new Date(f.to));
    if (f.action) q = q.where('action', '=', f.action);
    if (f.afterSeq !== undefined) q = q.where('seq', '>', f.afterSeq);
    return Number((await q.executeTakeFirstOrThrow()).n);
  },
};

const INVOICE_STATUSES = ['draft', 'finalized', 'paid', 'void', 'uncollectible'];
const InvoiceFilters = Type.Object(
  {
    status: Type.Optional(Type.Array(Type.Union(INVOICE_STATUSES.map((s) => Type.Literal(s))), { minItems: 1, maxItems: 5 })),
    from: Type.Optional(Type.String({ format: 'date-time', description: 'Invoices whose billing period starts at or after this' })),
    to: Type.Optional(Type.String({ format: 'date-time', description: 'Invoices whose billing period starts before this' })),
  },
  { additionalProperties: false },
);
const INVOICE_AMOUNTS = ['subtotal', 'discount_total', 'tax_total', 'total', 'credit_applied', 'credited', 'amount_due', 'amount_paid'] as const;

/** billing's invoices (header fields and totals in integer minor units; lines and PDFs stay in billing's API). */
const invoices: ExportSource<typeof InvoiceFilters> = {
  resource: 'invoices',
  permission: 'billing:read',
  columns: ['id', 'number', 'status', 'reason', 'subscription_id', 'currency', 'period_start', 'period_end', ...INVOICE_AMOUNTS, 'created_at', 'finalized_at', 'paid_at', 'voided_at', 'uncollectible_at'],
  text: ['number'],
  ints: [...INVOICE_AMOUNTS],
  filters: InvoiceFilters,
  ...byId,
  select(trx, tenantId, f, after, limit) {
    let q = trx
      .selectFrom('billing_invoices')
      .select([
        'id',
        'number',
        'status',
        'reason',
        'subscription_id',
        'currency',
        iso('period_start').as('period_start'),
        iso('period_end').as('period_end'),
        ...INVOICE_AMOUNTS,
        iso('created_at').as('created_at'),
        iso('finalized_at').as('finalized_at'),
        iso('paid_at').as('paid_at'),
        iso('voided_at').as('voided_at'),
        iso('uncollectible_at').as('uncollectible_at'),
      ])
      .where('tenant_id', '=', tenantId);
    if (after) q = q.where('id', '>', after);
    if (f.status) q = q.where('status', 'in', f.status);
    if (f.from) q = q.where('period_start', '>=', new Date(f.from));
    if (f.to) q = q.where('period_start', '<', new Date(f.to));
    return q.orderBy('id').limit(limit);
  },
  async count(trx, tenantId, f) {
    let q = trx.selectFrom('billing_invoices').select((e) => e.fn.countAll<number>().as('n')).where('tenant_id', '=', tenantId);
    if (f.status) q = q.where('status', 'in', f.status);
    if (f.from) q = q.where('period_start', '>=', new Date(f.from));
    if (f.to) q = q.where('period_start', '<', new Date(f.to));
    return Number((await q.executeTakeFirstOrThrow()).n);
  },
};

const UsageFilters = Type.Object(
  {
    metric: Type.Optional(Type.String({ minLength: 1, maxLength: 100 })),
    from: Type.Optional(Type.String({ format: 'date-time', description: 'Hours from this one (floored to the hour)' })),
    to: Type.Optional(Type.String({ format: 'date-time', description: 'Hours starting before this' })),
  },
  { additionalProperties: false },
);

/** The usage cursor: the last row's metric and hour (the rollups' key within the org). */
function parseUsageCursor(after: string): [string, Date] {
  const v = JSON.parse(after) as unknown;
  if (!Array.isArray(v) || typeof v[0] !== 'string' || typeof v[1] !== 'string') throw new Error('bad usage cursor');
  return [v[0], new Date(v[1])];
}

/** billing's hourly usage rollups (events, exact decimal sum, max per metric and hour), never the raw events. */
const usage: ExportSource<typeof UsageFilters> = {
  resource: 'usage',
  permission: 'billing:read',
  columns: ['metric', 'hour', 'events', 'sum', 'max'],
  text: ['metric'],
  ints: ['events'],
  filters: UsageFilters,
  // Keyset (metric, hour): the rollups' primary key after tenant_id. `hour` is fixed-width ISO text, which
  // sorts as the timestamps do.
  keyColumns: ['metric', 'hour'],
  cursorSql: sql`json_build_array(b.metric, b.hour)::text`,
  cursorOf: (r) => JSON.stringify([r.metric, r.hour]),
  select(trx, tenantId, f, after, limit) {
    let q = trx
      .selectFrom('billing_usage_rollups as r')
      .select([
        'r.metric',
        iso('r.bucket').as('hour'),
        sql<number>`r.count`.as('events'),
        // Exact decimals as text (a JSON number would lose digits in most readers).
        sql<string>`r.sum::text`.as('sum'),
        sql<string>`r.max::text`.as('max'),
      ])
      .where('r.tenant_id', '=', tenantId);
    if (after) {
      const [metric, hour] = parseUsageCursor(after);
      q = q.where(sql<boolean>`(r.metric, r.bucket) > (${metric}, ${hour}::timestamptz)`);
    }
    if (f.metric) q = q.where('r.metric', '=', f.metric);
    if (f.from) q = q.where(sql<boolean>`r.bucket >= date_trunc('hour', ${new Date(f.from)}::timestamptz)`);
    if (f.to) q = q.where('r.bucket', '<', new Date(f.to));
    return q.orderBy('r.metric').orderBy('r.bucket').limit(limit);
  },
  async count(trx, tenantId, f) {
    let q = trx.selectFrom('billing_usage_rollups as r').select((e) => e.fn.countAll<number>().as('n')).where('r.tenant_id', '=', tenantId);
    if (f.metric) q = q.where('r.metric', '=', f.metric);
    if (f.from) q = q.where(sql<boolean>`r.bucket >= date_trunc('hour', ${new Date(f.from)}::timestamptz)`);
    if (f.to) q = q.where('r.bucket', '<', new Date(f.to));
    return Number((await q.executeTakeFirstOrThrow()).n);
  },
};

/**
 * The exportable resources. Extensible: a resource is one entry. The API's `resource` enum is built from
 * these keys.
 */
export const EXPORT_SOURCES: Record<string, ExportSource> = {
  tasks,
  projects,
  members,
  'audit-events': auditEvents,
  invoices,
  usage,
} as Record<string, ExportSource>;
