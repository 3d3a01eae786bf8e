import { sql, type Expression, type RawBuilder, type SqlBool, type UpdateObject } from 'kysely';
import type { KeysetPosition } from '../../platform/http/pagination.ts';
import type { ProjectsTables, Trx } from './projects.repo.ts';
import { isStrictDate, isStrictDateTime } from '../../platform/http/input.ts';

export const TASK_STATUSES = ['todo', 'in_progress', 'done', 'canceled'] as const;
export type TaskStatus = (typeof TASK_STATUSES)[number];
export const PRIORITIES = ['none', 'low', 'medium', 'high', 'urgent'] as const;
export type Priority = (typeof PRIORITIES)[number];

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
  /** A calendar date (`YYYY-MM-DD`), not an instant: no time zone to convert. */
  dueDate: string | null;
  version: number;
  createdBy: string;
  createdAt: Date;
  updatedAt: Date;
}

function tasksWithKey(trx: Trx) {
  return trx
    .selectFrom('tasks as t')
    .innerJoin('projects as p', (j) => j.onRef('p.tenant_id', '=', 't.tenant_id').onRef('p.id', '=', 't.project_id'))
    .select([
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
    ]);
}

type TaskRow = Awaited<ReturnType<ReturnType<typeof tasksWithKey>['executeTakeFirstOrThrow']>>;

function toTask(r: TaskRow): Task {
  return {
    id: r.id,
    projectId: r.project_id,
    number: Number(r.number),
    key: `${r.project_key}-${r.number}`,
    title: r.title,
    description: r.description,
    // the column's CHECK constraint admits only TASK_STATUSES
    status: r.status as TaskStatus,
    priority: PRIORITIES[r.priority] ?? 'none',
    assigneeId: r.assignee_id,
    labels: r.labels,
    dueDate: r.due_date,
    version: r.version,
    createdBy: r.created_by,
    createdAt: new Date(r.created_at),
    updatedAt: new Date(r.updated_at),
  };
}

/** A task as created: the fields its creator chooses; the number, key, version and timestamps come from the database. */
export type NewTask = Omit<Task, 'number' | 'key' | 'version' | 'createdAt' | 'updatedAt'> & { tenantId: string };

/**
 * Hands out the project's next task number and inserts the task with it, in one statement: the project row
 * is locked (`UPDATE … RETURNING`) from here until the transaction ends, so callers run it as late as they
 * can — after every write that does not need the number (see the README, "Task numbers"). Gap-free: a
 * rollback returns the number with the row lock; unique: the lock orders the allocations of one project.
 * Null when the project does not exist or is archived (nothing written).
 */
export async function insertNumberedTask(trx: Trx, t: NewTask): Promise<Task | null> {
  const r = await trx
    .with('n', (db) =>
      db
        .updateTable('projects')
        .set({ task_counter: sql<number>`task_counter + 1` })
        .where('tenant_id', '=', t.tenantId)
        .where('id', '=', t.projectId)
        .where('archived', '=', false)
        .returning(['task_counter', 'key']),
    )
    .with('ins', (db) =>
      db
        .insertInto('tasks')
        .columns(['tenant_id', 'id', 'project_id', 'number', 'title', 'description', 'status', 'priority', 'assignee_id', 'labels', 'due_date', 'created_by'])
        .expression((eb) =>
          eb
            .selectFrom('n')
            .select([
              sql<string>`${t.tenantId}::uuid`.as('tenant_id'),
              sql<string>`${t.id}::uuid`.as('id'),
              sql<string>`${t.projectId}::uuid`.as('project_id'),
              'n.task_counter',
              sql<string>`${t.title}::text`.as('title'),
              sql<string>`${t.description}::text`.as('description'),
              sql<string>`${t.status}::text`.as('status'),
              sql<number>`${PRIORITIES.indexOf(t.priority)}::smallint`.as('priority'),
              sql<string | null>`${t.assigneeId}::uuid`.as('assignee_id'),
              sqlTextArray(t.labels).as('labels'),
              sql<string | null>`${t.dueDate}::date`.as('due_date'),
              sql<string>`${t.createdBy}::uuid`.as('created_by'),
            ]),
        )
        .returning([
          'id',
          'project_id',
          'number',
          'title',
          'description',
          'status',
          'priority',
          'assignee_id',
          'labels',
          sql<string | null>`due_date::text`.as('due_date'),
          'version',
          'created_by',
          'created_at',
          'updated_at',
        ]),
    )
    .selectFrom(['ins', 'n'])
    .selectAll('ins')
    .select('n.key as project_key')
    .executeTakeFirst();
  return r ? toTask(r) : null;
}

/** text[] literal as one bound parameter (both pg and PGlite accept the array literal syntax). */
function sqlTextArray(values: string[]): RawBuilder<string[]> {
  const literal = `{${values.map((v) => `"${v.replace(/\\/g, '\\\\').replace(/"/g, '\\"')}"`).join(',')}}`;
  return sql<string[]>`${literal}::text[]`;
}

export function findTaskQuery(trx: Trx, tenantId: string, id: string) {
  return tasksWithKey(trx).where('t.tenant_id', '=', tenantId).where('t.id', '=', id);
}

export async function findTask(trx: Trx, tenantId: string, id: string, opts: { forUpdate?: boolean } = {}): Promise<Task | null> {
  let q = findTaskQuery(trx, tenantId, id);
  if (opts.forUpdate) q = q.forUpdate('t');
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
  const set: UpdateObject<ProjectsTables, 'tasks'> = { version: sql<number>`version + 1`, updated_at: sql<Date>`now()` };
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
  /** calendar dates, exclusive */
  dueBefore?: string;
  dueAfter?: string;
  /** inclusive */
  updatedSince?: Date;
  q?: string;
}

export interface TaskListQuery extends TaskFilters {
  sort: TaskSort;
  limit: number;
  after?: KeysetPosition;
}

/**
 * Rows of the recent end of the requested order a full-text search looks at before it falls back to the
 * search index (see listTasksQuery). Costs the same at 10^4 and 10^6 tasks: ≈ 1-2 ms of index and heap
 * reads when a word is rare.
 */
export const SEARCH_PROBE_ROWS = 1000;

/**
 * The hot list/search query of a project's tasks. Keyset: `(sort column, number)` compared as a row, so
 * the matching index seeks straight to the page. Nullable due dates sort last ascending, first descending
 * (the order of one B-tree read either way).
 *
 * A full-text search (`q`) has two good plans and the planner cannot tell which from the statistics: for a
 * word in many tasks, walking the sort's B-tree and filtering stops after a few dozen rows; for a rare or
 * absent word that walk reads the whole project (4 s at 10^6 tasks, measured), and the GIN index of the
 * matches is the cheap way. So the query does both, bounded, in one statement: `probe` filters the first
 * SEARCH_PROBE_ROWS rows of the order; only when that did not fill the page does `hits` (all matches, via
 * GIN, materialized so the planner cannot turn it back into the walk) run and get sorted. The answer is
 * the same either way: the probe's window is a prefix of the order.
 */
export function listTasksQuery(trx: Trx, tenantId: string, projectId: string, q: TaskListQuery) {
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
  if (q.updatedSince) query = query.where(sql<SqlBool>`t.updated_at >= ${q.updatedSince.toISOString()}::timestamptz`);
  if (q.after) query = query.where(keysetPredicate(c, cast, desc, q.after));
  const order = desc ? 'desc' : 'asc';
  const dir = sql.raw(order);
  if (!q.q) return query.orderBy(sql`${c} ${dir}`).orderBy('t.number', order).limit(q.limit + 1);

  const page = q.limit + 1;
  const match = sql<SqlBool>`websearch_to_tsquery('english', ${q.q})`;
  const window = query.select([sql`t.search`.as('_search'), sql`${c}`.as('_sk')]).orderBy(sql`${c} ${dir}`).orderBy('t.number', order).limit(SEARCH_PROBE_ROWS);
  const hits = query.where(sql<SqlBool>`t.search @@ ${match}`).select(sql`${c}`.as('_sk'));
  const cols = sql.raw('id, project_id, number, title, description, status, priority, assignee_id, labels, due_date, version, created_by, created_at, updated_at, project_key, _sk');
  const found = sql<TaskRow & { _sk: unknown }>`(
    with probe as materialized (
      select ${cols} from (${window}) w where w._search @@ ${match} order by w._sk ${dir}, w.number ${dir} limit ${page}
    ), hits as materialized (${hits})
    select ${cols} from probe where (select count(*) from probe) >= ${page}
    union all
    select ${cols} from (select ${cols} from hits order by _sk ${dir}, number ${dir} limit ${page}) h where (select count(*) from probe) < ${page}
  )`;
  return trx.selectFrom(found.as('r')).selectAll().orderBy(sql`r._sk ${dir}`).orderBy(sql`r.number ${dir}`);
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

const isCount = (v: unknown) => Number.isSafeInteger(v) && (v as number) >= 0;

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
      return [t.updatedAt.toISOString(), t.number];
    case 'dueDate':
      return [t.dueDate, t.number];
    case 'priority':
      return [PRIORITIES.indexOf(t.priority), t.number];
    default:
      return [t.number, t.number];
  }
}
