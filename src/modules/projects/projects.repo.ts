import { sql, type Selectable, type SqlBool, type Transaction } from 'kysely';
import type { Database, DB, DbScope } from '../../platform/db/database.ts';
import type { KeysetPosition } from '../../platform/http/pagination.ts';
import { isUuid } from '../../platform/ids.ts';

/** The tables the projects module owns; its repos (projects, tasks, comments) see only these. */
export type ProjectsTables = Pick<DB, 'projects' | 'tasks' | 'task_comments'>;
/** Queries over the module's own tables. Always inside a tenant transaction (RLS). */
export type Trx = Transaction<ProjectsTables>;

export function projectsScope(db: Database): DbScope<ProjectsTables> {
  return db.scope('projects', 'tasks', 'task_comments');
}

export interface Project {
  id: string;
  key: string;
  name: string;
  description: string;
  archived: boolean;
  version: number;
  createdBy: string;
  createdAt: Date;
  updatedAt: Date;
}

const PROJECT_COLUMNS = ['id', 'key', 'name', 'description', 'archived', 'version', 'created_by', 'created_at', 'updated_at'] as const;
type ProjectRow = Pick<Selectable<DB['projects']>, (typeof PROJECT_COLUMNS)[number]>;

function toProject(r: ProjectRow): Project {
  return {
    id: r.id,
    key: r.key,
    name: r.name,
    description: r.description,
    archived: r.archived,
    version: r.version,
    createdBy: r.created_by,
    createdAt: new Date(r.created_at),
    updatedAt: new Date(r.updated_at),
  };
}

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

export interface ProjectChanges {
  name?: string;
  description?: string;
  archived?: boolean;
}

export async function updateProject(trx: Trx, tenantId: string, id: string, changes: ProjectChanges): Promise<Project> {
  const r = await trx
    .updateTable('projects')
    .set({ ...changes, version: sql<number>`version + 1`, updated_at: sql<Date>`now()` })
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

export const isUuidValue = (v: unknown) => typeof v === 'string' && isUuid(v);

export function validProjectPosition(sort: ProjectSort) {
  return ([v, id]: KeysetPosition) => isUuidValue(id) && (sort.endsWith('name') ? typeof v === 'string' && v.length <= 100 : isUuidValue(v));
}

export function projectPosition(p: Project, sort: ProjectSort): KeysetPosition {
  return sort.endsWith('name') ? [p.name, p.id] : [p.id, p.id];
}
