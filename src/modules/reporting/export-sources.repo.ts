import { Type, type Static, type TSchema } from '@sinclair/typebox';
import { sql, type RawBuilder, type Transaction } from 'kysely';
import type { DB } from '../../platform/db/database.ts';

/**
 * What exports read: keyset batches of the org's rows, in id order (UUIDv7: creation order), under RLS.
 * These are read-only projections of tables other modules own (projects, tenancy, identity, audit): the
 * reporting context reads them in READ ONLY transactions on a replica, never writes them, and depends on
 * no more of them than the columns listed here (the same exception the rebuild command makes).
 */
export type SourceTables = Pick<DB, 'tasks' | 'projects' | 'memberships' | 'users' | 'audit_events'>;
type Tx = Transaction<SourceTables>;
export type Row = Record<string, string | number | boolean | null>;

export interface ExportSource<F extends TSchema = TSchema> {
  resource: string;
  /** Besides exports:manage, what the caller must hold to export this resource. */
  permission: string;
  columns: string[];
  filters: F;
  /** Up to `limit` rows with id > after, in id order. */
  readBatch(trx: Tx, tenantId: string, filters: Static<F>, after: string | null, limit: number): Promise<Row[]>;
  count(trx: Tx, tenantId: string, filters: Static<F>): Promise<number>;
}

const iso = (d: Date | string | null) => (d === null ? null : new Date(d).toISOString());
/** A timestamptz as JavaScript's toISOString() prints it (UTC, milliseconds, Z), formatted by Postgres. */
const isoText = (col: RawBuilder<unknown> | ReturnType<typeof sql.ref>) => sql`to_char(${col} at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')`;
const Id = Type.String({ format: 'uuid' });

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
  filters: TaskFilters,
  async readBatch(trx, tenantId, f, after, limit) {
    // Formatted by Postgres (ISO timestamps, the key, the label list): a million rows parsed into Dates and
    // arrays only to be printed again cost the exporter more CPU than writing the CSV (profiled).
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
        sql<string>`${isoText(sql.ref('t.created_at'))}`.as('created_at'),
        sql<string>`${isoText(sql.ref('t.updated_at'))}`.as('updated_at'),
      ])
      .where('t.tenant_id', '=', tenantId);
    if (after) q = q.where('t.id', '>', after);
    if (f.projectId) q = q.where('t.project_id', '=', f.projectId);
    if (f.status) q = q.where('t.status', 'in', f.status);
    const rows = await q.orderBy('t.id').limit(limit).execute();
    for (const r of rows) (r as { number: number }).number = Number(r.number);
    return rows as Row[];
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
  filters: ProjectFilters,
  async readBatch(trx, tenantId, f, after, limit) {
    let q = trx.selectFrom('projects').select(['id', 'key', 'name', 'description', 'archived', 'created_by', 'created_at', 'updated_at']).where('tenant_id', '=', tenantId);
    if (after) q = q.where('id', '>', after);
    if (f.archived !== undefined) q = q.where('archived', '=', f.archived);
    const rows = await q.orderBy('id').limit(limit).execute();
    return rows.map((r) => ({ ...r, created_at: iso(r.created_at), updated_at: iso(r.updated_at) }));
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
  filters: MemberFilters,
  async readBatch(trx, tenantId, f, after, limit) {
    let q = trx
      .selectFrom('memberships as m')
      .innerJoin('users as u', 'u.id', 'm.user_id')
      .select(['m.id', 'm.user_id', 'u.email', 'u.name', 'm.role', 'm.created_at'])
      .where('m.tenant_id', '=', tenantId);
    if (after) q = q.where('m.id', '>', after);
    if (f.role) q = q.where('m.role', '=', f.role);
    const rows = await q.orderBy('m.id').limit(limit).execute();
    return rows.map((r) => ({ id: r.id, user_id: r.user_id, email: r.email, name: r.name, role: r.role, joined_at: iso(r.created_at) }));
  },
  async count(trx, tenantId, f) {
    let q = trx.selectFrom('memberships').select((e) => e.fn.countAll<number>().as('n')).where('tenant_id', '=', tenantId);
    if (f.role) q = q.where('role', '=', f.role);
    return Number((await q.executeTakeFirstOrThrow()).n);
  },
};

const AuditFilters = Type.Object(
  {
    from: Type.Optional(Type.String({ format: 'date-time' })),
    to: Type.Optional(Type.String({ format: 'date-time' })),
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
  filters: AuditFilters,
  async readBatch(trx, tenantId, f, after, limit) {
    let q = trx.selectFrom('audit_events').select(AUDIT_COLUMNS).where('tenant_id', '=', tenantId);
    if (after) q = q.where('id', '>', after);
    if (f.afterSeq !== undefined) q = q.where('seq', '>', f.afterSeq);
    if (f.from) q = q.where('occurred_at', '>=', new Date(f.from));
    if (f.to) q = q.where('occurred_at', '<', new Date(f.to));
    if (f.action) q = q.where('action', '=', f.action);
    const rows = await q.orderBy('id').limit(limit).execute();
    return rows.map((r) => ({ ...r, seq: r.seq === null ? null : Number(r.seq), occurred_at: iso(r.occurred_at), changes: JSON.stringify(r.changes) }));
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

/**
 * The exportable resources. Extensible: a resource is one entry (billing adds `invoices` and `usage` when it
 * exists). The API's `resource` enum is built from these keys.
 */
export const EXPORT_SOURCES: Record<string, ExportSource> = {
  tasks,
  projects,
  members,
  'audit-events': auditEvents,
} as Record<string, ExportSource>;
