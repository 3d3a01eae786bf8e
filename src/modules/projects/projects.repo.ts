import { sql, type Expression, type SelectQueryBuilder, type SqlBool, type Transaction } from 'kysely';
import type { KeysetPosition } from '../../platform/http/pagination.ts';
import { isStrictDate, isStrictDateTime } from '../../platform/http/input.ts';
import { isUuid } from '../../platform/ids.ts';

/** Queries over the module's own tables (projects, tasks, task_comments). Always inside db.withTenant. */
export type Trx = Transaction<any>;

export const TASK_STATUSES = ['todo', 'in_progress', 'done', 'canceled'] as const;
export type TaskStatus = (typeof TASK_STATUSES)[number];
export const PRIORITIES = ['none', 'low', 'medium', 'high', 'urgent'] as const;
export type Priority = (typeof PRIORITIES)[number];

export interface Project {
  id: string;
  key: string;
  name: string;
  description: string;
  archived: boolean;
  version: number;
  createdBy: string;
  createdAt: string;
  updatedAt: string;
}

export interface Task {
  id: string;
  projectId: string;
  number: number;
  key: string;
  title: string;
  description: string;
  status: TaskStatus;
  priority: Priority;
  assigneeId: string | null;
  labels: string[];
  dueDate: string | null;
  version: number;
  createdBy: string;
  createdAt: string;
  updatedAt: string;
}

export interface Comment {
  id: string;
  taskId: string;
  authorId: string;
  body: string;
  createdAt: string;
}

const iso = (v: Date | string) => (v instanceof Date ? v : new Date(v)).toISOString();

function toProject(r: any): Project {
  return {
    id: r.id,
    key: r.key,
    name: r.name,
    description: r.description,
    archived: r.archived,
    version: r.version,
    createdBy: r.created_by,
    createdAt: iso(r.created_at),
    updatedAt: iso(r.updated_at),
  };
}

function toTask(r: any): Task {
  return {
    id: r.id,
    projectId: r.project_id,
    number: Number(r.number),
    key: `${r.project_key}-${r.number}`,
    title: r.title,
    description: r.description,
    status: r.status,
    priority: PRIORITIES[r.priority] ?? 'none',
    assigneeId: r.assignee_id,
    labels: r.labels,
    dueDate: r.due_date,
    version: r.version,
    createdBy: r.created_by,
    createdAt: iso(r.created_at),
    updatedAt: iso(r.updated_at),
  };
}

function toComment(r: any): Comment {
  return { id: r.id, taskId: r.task_id, authorId: r.author_id, body: r.body, createdAt: iso(r.created_at) };
}

const PROJECT_COLUMNS = ['id', 'key', 'name', 'description', 'archived', 'version', 'created_by', 'created_at', 'updated_at'] as const;

// ---------------------------------------------------------------------------------------------- projects

export async function insertProject(
  trx: Trx,
  row: { tenantId: string; id: string; key: string; name: string; description: string; createdBy: string },
): Promise<Project | null> {
  const r = await trx
    .insertInto('projects')
    .values({ tenant_id: row.tenantId, id: row.id, key: row.key, name: row.name, description: row.description, created_by: row.createdBy })
    .onConflict((oc) => oc.columns(['tenant_id', 'key']).doNothing())
    .returning(PROJECT_COLUMNS)
    .executeTakeFirst();
  return r ? toProject(r) : null;
}

/** Serializes project creation per org for this transaction, so a plan limit cannot be overshot by a race. */
export async function lockProjectCreation(trx: Trx, tenantId: string): Promise<void> {
  await sql`select pg_advisory_xact_lock(hashtextextended(${`projects.create:${tenantId}`}, 0))`.execute(trx);
}

export async function countProjects(trx: Trx, tenantId: string): Promise<number> {
  const r = await trx.selectFrom('projects').where('tenant_id', '=', tenantId).select((eb) => eb.fn.countAll().as('n')).executeTakeFirstOrThrow();
  return Number(r.n);
}

export async function findProject(trx: Trx, tenantId: string, id: string, opts: { forUpdate?: boolean } = {}): Promise<Project | null> {
  let q = trx.selectFrom('projects').select(PROJECT_COLUMNS).where('tenant_id', '=', tenantId).where('id', '=', id);
  if (opts.forUpdate) q = q.forUpdate();
  const r = await q.executeTakeFirst();
  return r ? toProject(r) : null;
}

export async function updateProject(
  trx: Trx,
  tenantId: string,
  id: string,
  changes: { name?: string; description?: string; archived?: boolean },
): Promise<Project> {
  const r = await trx
    .updateTable('projects')
    .set({ ...changes, version: sql`version + 1`, updated_at: sql`now()` })
    .where('tenant_id', '=', tenantId)
    .where('id', '=', id)
    .returning(PROJECT_COLUMNS)
    .executeTakeFirstOrThrow();
  return toProject(r);
}

export async function deleteProject(trx: Trx, tenantId: string, id: string): Promise<void> {
  await trx.deleteFrom('projects').where('tenant_id', '=', tenantId).where('id', '=', id).execute();
}

export const PROJECT_SORTS = ['-createdAt', 'createdAt', 'name', '-name'] as const;
export type ProjectSort = (typeof PROJECT_SORTS)[number];

export interface ProjectListQuery {
  archived?: boolean;
  sort: ProjectSort;
  limit: number;
  after?: KeysetPosition;
}

/** Creation order is id order (UUIDv7); name order is backed by projects_name_idx. */
export function listProjectsQuery(trx: Trx, tenantId: string, q: ProjectListQuery) {
  const desc = q.sort.startsWith('-');
  const byName = q.sort.endsWith('name');
  let query = trx.selectFrom('projects').select(PROJECT_COLUMNS).where('tenant_id', '=', tenantId);
  if (q.archived !== undefined) query = query.where('archived', '=', q.archived);
  if (q.after) {
    const [v, id] = q.after;
    const op = desc ? '<' : '>';
    query = byName
      ? query.where(sql<SqlBool>`(name, id) ${sql.raw(op)} (${v}, ${id}::uuid)`)
      : query.where('id', op, String(id));
  }
  const dir = desc ? 'desc' : 'asc';
  if (byName) query = query.orderBy('name', dir);
  return query.orderBy('id', dir).limit(q.limit + 1);
}

export async function listProjects(trx: Trx, tenantId: string, q: ProjectListQuery): Promise<Project[]> {
  return (await listProjectsQuery(trx, tenantId, q).execute()).map(toProject);
}

const isUuidValue = (v: unknown) => typeof v === 'string' && isUuid(v);
const isCount = (v: unknown) => Number.isSafeInteger(v) && (v as number) >= 0;

export function validProjectPosition(sort: ProjectSort) {
  return ([v, id]: KeysetPosition) => isUuidValue(id) && (sort.endsWith('name') ? typeof v === 'string' && v.length <= 100 : isUuidValue(v));
}

export function validCommentPosition([v, id]: KeysetPosition) {
  return isUuidValue(v) && v === id;
}

export function projectPosition(p: Project, sort: ProjectSort): KeysetPosition {
  return sort.endsWith('name') ? [p.name, p.id] : [p.id, p.id];
}

// ------------------------------------------------------------------------------------------------- tasks

/** Hands out the next number of a project, or null when the project does not exist (or is archived). */
export async function nextTaskNumber(trx: Trx, tenantId: string, projectId: string): Promise<{ number: number; key: string } | null> {
  const r = await trx
    .updateTable('projects')
    .set({ task_counter: sql`task_counter + 1` })
    .where('tenant_id', '=', tenantId)
    .where('id', '=', projectId)
    .where('archived', '=', false)
    .returning(['task_counter', 'key'])
    .executeTakeFirst();
  return r ? { number: Number(r.task_counter), key: r.key } : null;
}

const TASK_SELECT = [
  't.id',
  't.project_id',
  't.number',
  't.title',
  't.description',
  't.status',
  't.priority',
  't.assignee_id',
  't.labels',
  sql<string | null>`t.due_date::text`.as('due_date'),
  't.version',
  't.created_by',
  't.created_at',
  't.updated_at',
  'p.key as project_key',
] as const;

function tasksWithKey(trx: Trx) {
  return trx
    .selectFrom('tasks as t')
    .innerJoin('projects as p', (j) => j.onRef('p.tenant_id', '=', 't.tenant_id').onRef('p.id', '=', 't.project_id'))
    .select(TASK_SELECT as any);
}

export interface NewTask {
  tenantId: string;
  id: string;
  projectId: string;
  number: number;
  title: string;
  description: string;
  status: TaskStatus;
  priority: Priority;
  assigneeId: string | null;
  labels: string[];
  dueDate: string | null;
  createdBy: string;
}

export async function insertTask(trx: Trx, t: NewTask): Promise<void> {
  await trx
    .insertInto('tasks')
    .values({
      tenant_id: t.tenantId,
      id: t.id,
      project_id: t.projectId,
      number: t.number,
      title: t.title,
      description: t.description,
      status: t.status,
      priority: PRIORITIES.indexOf(t.priority),
      assignee_id: t.assigneeId,
      labels: sql`${sqlTextArray(t.labels)}`,
      due_date: t.dueDate,
      created_by: t.createdBy,
    })
    .execute();
}

/** text[] literal as one bound parameter (both pg and PGlite accept the array literal syntax). */
function sqlTextArray(values: string[]) {
  const literal = `{${values.map((v) => `"${v.replace(/\\/g, '\\\\').replace(/"/g, '\\"')}"`).join(',')}}`;
  return sql`${literal}::text[]`;
}

export function findTaskQuery(trx: Trx, tenantId: string, id: string) {
  return tasksWithKey(trx).where('t.tenant_id', '=', tenantId).where('t.id', '=', id);
}

export async function findTask(trx: Trx, tenantId: string, id: string, opts: { forUpdate?: boolean } = {}): Promise<Task | null> {
  let q = findTaskQuery(trx, tenantId, id);
  if (opts.forUpdate) q = q.forUpdate('t' as any);
  const r = await q.executeTakeFirst();
  return r ? toTask(r) : null;
}

export interface TaskChanges {
  title?: string;
  description?: string;
  status?: TaskStatus;
  priority?: Priority;
  assigneeId?: string | null;
  labels?: string[];
  dueDate?: string | null;
}

export async function updateTask(trx: Trx, tenantId: string, id: string, c: TaskChanges): Promise<void> {
  const set: Record<string, unknown> = { version: sql`version + 1`, updated_at: sql`now()` };
  if (c.title !== undefined) set.title = c.title;
  if (c.description !== undefined) set.description = c.description;
  if (c.status !== undefined) set.status = c.status;
  if (c.priority !== undefined) set.priority = PRIORITIES.indexOf(c.priority);
  if (c.assigneeId !== undefined) set.assignee_id = c.assigneeId;
  if (c.labels !== undefined) set.labels = sqlTextArray(c.labels);
  if (c.dueDate !== undefined) set.due_date = c.dueDate;
  await trx.updateTable('tasks').set(set).where('tenant_id', '=', tenantId).where('id', '=', id).execute();
}

export async function deleteTask(trx: Trx, tenantId: string, id: string): Promise<void> {
  await trx.deleteFrom('tasks').where('tenant_id', '=', tenantId).where('id', '=', id).execute();
}

export const TASK_SORTS = ['-number', 'number', '-updatedAt', 'updatedAt', 'dueDate', '-dueDate', '-priority', 'priority'] as const;
export type TaskSort = (typeof TASK_SORTS)[number];

/** Sort → column; each is the leading column after (tenant_id, project_id) of an index ending in number. */
const SORT_COLUMN: Record<string, { col: string; cast: string }> = {
  number: { col: 't.number', cast: 'bigint' },
  updatedAt: { col: 't.updated_at', cast: 'timestamptz' },
  dueDate: { col: 't.due_date', cast: 'date' },
  priority: { col: 't.priority', cast: 'smallint' },
};

export interface TaskFilters {
  status?: TaskStatus[];
  /** a user id, or 'none' for unassigned tasks */
  assignee?: string;
  label?: string;
  dueBefore?: string;
  dueAfter?: string;
  updatedSince?: string;
  q?: string;
}

export interface TaskListQuery extends TaskFilters {
  sort: TaskSort;
  limit: number;
  after?: KeysetPosition;
}

/**
 * The hot list/search query of a project's tasks. Keyset: `(sort column, number)` compared as a row, so
 * the matching index seeks straight to the page. Nullable due dates sort last ascending, first descending
 * (the order of one B-tree read either way).
 */
export function listTasksQuery(trx: Trx, tenantId: string, projectId: string, q: TaskListQuery): SelectQueryBuilder<any, any, any> {
  const desc = q.sort.startsWith('-');
  const { col, cast } = SORT_COLUMN[q.sort.replace(/^-/, '')]!;
  const c = sql.ref(col);
  let query = tasksWithKey(trx).where('t.tenant_id', '=', tenantId).where('t.project_id', '=', projectId);
  if (q.status?.length) query = query.where('t.status', 'in', q.status);
  if (q.assignee === 'none') query = query.where('t.assignee_id', 'is', null);
  else if (q.assignee) query = query.where('t.assignee_id', '=', q.assignee);
  if (q.label) query = query.where(sql<SqlBool>`t.labels @> ${sqlTextArray([q.label])}`);
  if (q.dueBefore) query = query.where(sql<SqlBool>`t.due_date < ${q.dueBefore}::date`);
  if (q.dueAfter) query = query.where(sql<SqlBool>`t.due_date > ${q.dueAfter}::date`);
  if (q.updatedSince) query = query.where(sql<SqlBool>`t.updated_at >= ${q.updatedSince}::timestamptz`);
  if (q.q) query = query.where(sql<SqlBool>`t.search @@ websearch_to_tsquery('english', ${q.q})`);
  if (q.after) query = query.where(keysetPredicate(c, cast, desc, q.after));
  const dir = desc ? 'desc' : 'asc';
  return query.orderBy(sql`${c} ${sql.raw(dir)}`).orderBy('t.number', dir).limit(q.limit + 1);
}

function keysetPredicate(c: Expression<unknown>, cast: string, desc: boolean, [v, n]: KeysetPosition): Expression<SqlBool> {
  const op = sql.raw(desc ? '<' : '>');
  const value = sql`${v}::${sql.raw(cast)}`;
  const num = sql`${n}::bigint`;
  if (v === null) {
    // ascending: nulls are the tail, continue within them; descending: nulls are the head, then all values
    return desc ? sql<SqlBool>`((${c} is null and t.number < ${num}) or ${c} is not null)` : sql<SqlBool>`(${c} is null and t.number > ${num})`;
  }
  const row = sql<SqlBool>`(${c}, t.number) ${op} (${value}, ${num})`;
  return desc ? row : sql<SqlBool>`(${row} or ${c} is null)`;
}

export async function listTasks(trx: Trx, tenantId: string, projectId: string, q: TaskListQuery): Promise<Task[]> {
  return (await listTasksQuery(trx, tenantId, projectId, q).execute()).map(toTask);
}

export function validTaskPosition(sort: TaskSort) {
  return ([v, n]: KeysetPosition): boolean => {
    if (!isCount(n)) return false;
    switch (sort.replace(/^-/, '')) {
      case 'updatedAt':
        return typeof v === 'string' && isStrictDateTime(v);
      case 'dueDate':
        return v === null || (typeof v === 'string' && isStrictDate(v));
      case 'priority':
        return Number.isInteger(v) && (v as number) >= 0 && (v as number) < PRIORITIES.length;
      default:
        return isCount(v);
    }
  };
}

export function taskPosition(t: Task, sort: TaskSort): KeysetPosition {
  switch (sort.replace(/^-/, '')) {
    case 'updatedAt':
      return [t.updatedAt, t.number];
    case 'dueDate':
      return [t.dueDate, t.number];
    case 'priority':
      return [PRIORITIES.indexOf(t.priority), t.number];
    default:
      return [t.number, t.number];
  }
}

// ---------------------------------------------------------------------------------------------- comments

export async function insertComment(
  trx: Trx,
  c: { tenantId: string; id: string; taskId: string; authorId: string; body: string },
): Promise<Comment> {
  const r = await trx
    .insertInto('task_comments')
    .values({ tenant_id: c.tenantId, id: c.id, task_id: c.taskId, author_id: c.authorId, body: c.body })
    .returning(['id', 'task_id', 'author_id', 'body', 'created_at'])
    .executeTakeFirstOrThrow();
  return toComment(r);
}

export function listCommentsQuery(trx: Trx, tenantId: string, taskId: string, q: { limit: number; after?: string }) {
  let query = trx
    .selectFrom('task_comments')
    .select(['id', 'task_id', 'author_id', 'body', 'created_at'])
    .where('tenant_id', '=', tenantId)
    .where('task_id', '=', taskId);
  if (q.after) query = query.where('id', '>', q.after);
  return query.orderBy('id', 'asc').limit(q.limit + 1);
}

export async function listComments(trx: Trx, tenantId: string, taskId: string, q: { limit: number; after?: string }): Promise<Comment[]> {
  return (await listCommentsQuery(trx, tenantId, taskId, q).execute()).map(toComment);
}
