import { sql, type Kysely } from 'kysely';
import { setTenant, type DB } from '../../platform/db/database.ts';
import type { ProjectsTables, Trx } from './projects.repo.ts';

/** The owner connection (`db.owner`): seeding bypasses no RLS, it sets each org's context. */
export type SeedDb = Kysely<ProjectsTables>;

/** The owner connection seen with the module's tables only (the narrowing `db.scope` does for the app role). */
export function ownerScope(owner: Kysely<DB>): SeedDb {
  return owner as unknown as SeedDb;
}

const WORDS = [
  'login', 'billing', 'invoice', 'export', 'dashboard', 'webhook', 'search', 'onboarding', 'report', 'cache',
  'timeout', 'mobile', 'email', 'payment', 'refund', 'upload', 'avatar', 'settings', 'migration', 'latency',
  'crash', 'permissions', 'audit', 'calendar', 'sync', 'import', 'notification', 'pagination', 'filter', 'api',
];
const VERBS = ['Fix', 'Add', 'Improve', 'Refactor', 'Investigate', 'Document', 'Remove', 'Speed up', 'Test', 'Design'];
const LABELS = ['bug', 'feature', 'chore', 'frontend', 'backend', 'security', 'performance', 'docs', 'ux', 'infra'];

export const textArray = (values: string[]) => `{${values.map((v) => `"${v}"`).join(',')}}`;

/** Runs fn in one owner transaction inside the org's tenant context. */
export async function inTenant<R>(owner: SeedDb, tenantId: string, fn: (trx: Trx) => Promise<R>): Promise<R> {
  return owner.transaction().execute(async (trx) => {
    await setTenant(trx, tenantId);
    return fn(trx);
  });
}

/** Creates the org's projects P01…Pn; a key that exists already keeps its project. */
export async function insertSeedProjects(trx: Trx, tenantId: string, projects: Array<{ id: string; key: string; name: string }>, creator: string) {
  for (const p of projects) {
    await trx
      .insertInto('projects')
      .values({ tenant_id: tenantId, id: p.id, key: p.key, name: p.name, created_by: creator })
      .onConflict((oc) => oc.columns(['tenant_id', 'key']).doNothing())
      .execute();
  }
}

/** The org's first `limit` projects by key, with the last task number each handed out. */
export async function seedProjectCounters(trx: Trx, tenantId: string, limit: number): Promise<Array<{ id: string; counter: number }>> {
  const rows = await trx.selectFrom('projects').select(['id', 'task_counter']).where('tenant_id', '=', tenantId).orderBy('key').limit(limit).execute();
  return rows.map((r) => ({ id: r.id, counter: Number(r.task_counter) }));
}

export async function setTaskCounter(trx: Trx, tenantId: string, projectId: string, counter: number): Promise<void> {
  await trx.updateTable('projects').set({ task_counter: counter }).where('tenant_id', '=', tenantId).where('id', '=', projectId).execute();
}

/** Fresh planner statistics for the module's tables (after a bulk load, before autovacuum gets there). */
export async function analyzeProjects(owner: SeedDb): Promise<void> {
  await sql`analyze projects, tasks`.execute(owner);
}

export async function insertTaskBatch(
  trx: Trx,
  b: { tenantId: string; projectId: string; start: number; count: number; members: string; creator: string },
): Promise<void> {
  // created_at spread over the last year; ids are UUIDv7 built from it, so id order ≈ creation order.
  await sql`
    with g as (
      select
        i,
        now() - (random() * interval '365 days') as created_at,
        random() as r1, random() as r2, random() as r3, random() as r4
      from generate_series(1, ${b.count}::int) as i
    )
    insert into tasks (tenant_id, id, project_id, number, title, description, status, priority, assignee_id,
                       labels, due_date, created_by, created_at, updated_at)
    select
      ${b.tenantId}::uuid,
      (lpad(to_hex((extract(epoch from created_at) * 1000)::bigint), 12, '0') || '7'
        || substr(md5(i::text || r1::text), 1, 3) || to_hex(8 + (r2 * 3)::int)
        || substr(md5(r3::text || i::text), 1, 15))::uuid,
      ${b.projectId}::uuid,
      ${b.start}::bigint + i,
      (${sql.lit(textArray(VERBS))}::text[])[1 + floor(r1 * ${VERBS.length})::int] || ' '
        || (${sql.lit(textArray(WORDS))}::text[])[1 + floor(r2 * ${WORDS.length})::int] || ' '
        || (${sql.lit(textArray(WORDS))}::text[])[1 + floor(r3 * ${WORDS.length})::int],
      'Seeded task ' || i || ': the ' || (${sql.lit(textArray(WORDS))}::text[])[1 + floor(r4 * ${WORDS.length})::int]
        || ' flow needs attention before the next release.',
      (array['todo', 'todo', 'in_progress', 'done', 'done', 'done', 'canceled'])[1 + floor(r4 * 7)::int],
      floor(r1 * 5)::int,
      case when cardinality(${b.members}::uuid[]) = 0 or r2 < 0.2 then null
           else (${b.members}::uuid[])[1 + floor(r3 * cardinality(${b.members}::uuid[]))::int] end,
      case when r3 < 0.5 then array[(${sql.lit(textArray(LABELS))}::text[])[1 + floor(r1 * ${LABELS.length})::int]]
           when r3 < 0.7 then array[(${sql.lit(textArray(LABELS))}::text[])[1 + floor(r1 * ${LABELS.length})::int],
                                    (${sql.lit(textArray(LABELS))}::text[])[1 + (floor(r1 * ${LABELS.length})::int + 1 + floor(r4 * ${LABELS.length - 1})::int) % ${LABELS.length}]]
           else '{}'::text[] end,
      case when r4 < 0.6 then (created_at + (r2 * interval '90 days'))::date else null end,
      ${b.creator}::uuid,
      created_at,
      least(now(), created_at + (r4 * interval '30 days'))
    from g`.execute(trx);
}
