import { sql, type Kysely } from 'kysely';
import { setTenant } from '../../platform/db/database.ts';
import { newId } from '../../platform/ids.ts';

export interface SeedProgress {
  tenantIndex: number;
  tasksDone: number;
  tasksTotal: number;
}

export interface SeedOptions {
  /** Orgs to fill (their ids); each gets `projectsPerOrg` projects and an equal share of tasks. */
  orgs: Array<{ id: string; memberIds: string[] }>;
  tasks: number;
  projectsPerOrg?: number;
  /** Rows per INSERT … SELECT generate_series statement (one transaction each). */
  batchSize?: number;
  onProgress?: (p: SeedProgress) => void;
}

const WORDS = [
  'login', 'billing', 'invoice', 'export', 'dashboard', 'webhook', 'search', 'onboarding', 'report', 'cache',
  'timeout', 'mobile', 'email', 'payment', 'refund', 'upload', 'avatar', 'settings', 'migration', 'latency',
  'crash', 'permissions', 'audit', 'calendar', 'sync', 'import', 'notification', 'pagination', 'filter', 'api',
];
const VERBS = ['Fix', 'Add', 'Improve', 'Refactor', 'Investigate', 'Document', 'Remove', 'Speed up', 'Test', 'Design'];
const LABELS = ['bug', 'feature', 'chore', 'frontend', 'backend', 'security', 'performance', 'docs', 'ux', 'infra'];

const textArray = (values: string[]) => `{${values.map((v) => `"${v}"`).join(',')}}`;

/**
 * Bulk-generates realistic projects and tasks as the owner, inside each org's tenant context, with
 * INSERT … SELECT over generate_series (no per-row round trips). Task numbers are gap-free per project
 * and each project's counter is left at its last number, so the API continues the sequence.
 */
export async function seedProjects(owner: Kysely<any>, opts: SeedOptions): Promise<{ projects: number; tasks: number }> {
  const projectsPerOrg = opts.projectsPerOrg ?? 5;
  const batchSize = opts.batchSize ?? 20_000;
  const perOrg = Math.floor(opts.tasks / Math.max(opts.orgs.length, 1));
  let done = 0;
  let projects = 0;
  for (const [tenantIndex, org] of opts.orgs.entries()) {
    const orgTasks = tenantIndex === opts.orgs.length - 1 ? opts.tasks - perOrg * (opts.orgs.length - 1) : perOrg;
    const creator = org.memberIds[0] ?? newId();
    const projectIds: string[] = [];
    await owner.transaction().execute(async (trx) => {
      await setTenant(trx, org.id);
      for (let p = 0; p < projectsPerOrg; p++) {
        const id = newId();
        projectIds.push(id);
        await trx
          .insertInto('projects')
          .values({ tenant_id: org.id, id, key: `P${String(p + 1).padStart(2, '0')}`, name: `Project ${p + 1}`, created_by: creator })
          .onConflict((oc) => oc.columns(['tenant_id', 'key']).doNothing())
          .execute();
      }
    });
    // Existing projects with the same key keep theirs: continue their numbering instead.
    const rows = await owner.transaction().execute(async (trx) => {
      await setTenant(trx, org.id);
      return trx.selectFrom('projects').select(['id', 'task_counter']).where('tenant_id', '=', org.id).orderBy('key').limit(projectsPerOrg).execute();
    });
    projects += rows.length;
    const counters = new Map(rows.map((r) => [r.id as string, Number(r.task_counter)]));
    const members = textArray(org.memberIds);
    for (const [p, row] of rows.entries()) {
      const share = Math.floor(orgTasks / rows.length) + (p < orgTasks % rows.length ? 1 : 0);
      for (let offset = 0; offset < share; offset += batchSize) {
        const n = Math.min(batchSize, share - offset);
        const start = counters.get(row.id)!;
        await owner.transaction().execute(async (trx) => {
          await setTenant(trx, org.id);
          await insertTaskBatch(trx, { tenantId: org.id, projectId: row.id, start, count: n, members, creator });
          await trx.updateTable('projects').set({ task_counter: start + n }).where('tenant_id', '=', org.id).where('id', '=', row.id).execute();
        });
        counters.set(row.id, start + n);
        done += n;
        opts.onProgress?.({ tenantIndex, tasksDone: done, tasksTotal: opts.tasks });
      }
    }
  }
  return { projects, tasks: done };
}

async function insertTaskBatch(
  trx: Kysely<any>,
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
