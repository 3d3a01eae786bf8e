import { CompiledQuery, sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { newId } from '../../platform/ids.ts';
import { createTestDatabase, type TestDatabase } from '../../platform/testing/test-db.ts';
import { seedProjects } from './projects.seed.ts';
import { listCommentsQuery } from './comments.repo.ts';
import { projectsScope, type Trx } from './projects.repo.ts';
import { findTask, findTaskQuery, listTasksQuery, TASK_SORTS, type TaskListQuery } from './tasks.repo.ts';

/**
 * Every hot list/search query of tasks is backed by an index: at ≥ 100k tasks, EXPLAIN of each query the
 * repo builds (the exact SQL and parameters, run as the app role under RLS) contains no Seq Scan of tasks.
 */
const TASKS = 100_000;

interface PlanNode {
  'Node Type': string;
  'Relation Name'?: string;
  Plans?: PlanNode[];
}

/** A Sort node: the rows did not come out of an index in the requested order. */
function sorts(node: PlanNode): string[] {
  return [...(node['Node Type'] === 'Sort' ? ['Sort'] : []), ...(node.Plans ?? []).flatMap(sorts)];
}

function seqScansOfTasks(node: PlanNode): string[] {
  const own = node['Node Type'] === 'Seq Scan' && node['Relation Name'] === 'tasks' ? ['Seq Scan on tasks'] : [];
  return [...own, ...(node.Plans ?? []).flatMap(seqScansOfTasks)];
}

async function explain(trx: Trx, compiled: CompiledQuery): Promise<PlanNode> {
  const { rows } = await trx.executeQuery<Record<string, unknown>>(
    CompiledQuery.raw(`explain (format json) ${compiled.sql}`, [...compiled.parameters]),
  );
  const raw = rows[0]!['QUERY PLAN'];
  const plan = (typeof raw === 'string' ? JSON.parse(raw) : raw) as Array<{ Plan: PlanNode }>;
  return plan[0]!.Plan;
}

describe(`task queries use indexes at ${TASKS} tasks (${process.env.TEST_DATABASE_URL ? 'postgres' : 'pglite'})`, () => {
  let t: TestDatabase;
  const orgA = newId();
  const orgB = newId();
  const members = Array.from({ length: 8 }, () => newId());
  let projectId: string;
  let sampleTaskId: string;

  beforeAll(async () => {
    t = await createTestDatabase();
    await seedProjects(t.db.owner, {
      orgs: [
        { id: orgA, memberIds: members },
        { id: orgB, memberIds: [newId()] },
      ],
      tasks: TASKS + 20_000,
      projectsPerOrg: 3,
    });
    await sql`analyze`.execute(t.db.owner);
    const row = await t.db.withTenant(orgA, (trx) =>
      trx.selectFrom('tasks').select(['project_id', 'id']).where('tenant_id', '=', orgA).orderBy('number').limit(1).executeTakeFirstOrThrow(),
    );
    projectId = row.project_id;
    sampleTaskId = row.id;
  }, 600_000);
  afterAll(async () => t?.drop());

  it('seeded ≥ 100k tasks', async () => {
    const { rows } = await sql<{ n: number }>`select count(*)::int as n from tasks`.execute(t.db.owner);
    expect(rows[0]!.n).toBeGreaterThanOrEqual(TASKS);
  });

  it('seeded numbers are 1..n per project and each counter sits at its last number', async () => {
    const { rows } = await sql<{ bad: number }>`
      select count(*)::int as bad from (
        select p.id from projects p join tasks t on t.tenant_id = p.tenant_id and t.project_id = p.id
        group by p.id, p.task_counter
        having count(*) <> p.task_counter or min(t.number) <> 1 or max(t.number) <> p.task_counter
      ) x`.execute(t.db.owner);
    expect(rows[0]!.bad).toBe(0);
  });

  const scope = () => projectsScope(t.db);
  const base = { limit: 25 };
  const cases: Array<[string, Omit<TaskListQuery, 'limit'>]> = [
    ...TASK_SORTS.map((sort): [string, Omit<TaskListQuery, 'limit'>] => [`sort ${sort}`, { sort }]),
    ['page 2 by number', { sort: '-number', after: [50_000, 50_000] }],
    ['page 2 by updatedAt', { sort: '-updatedAt', after: ['2026-01-01T00:00:00.000Z', 10] }],
    ['page 2 by dueDate (values)', { sort: 'dueDate', after: ['2026-01-01', 10] }],
    ['page 2 by dueDate (nulls)', { sort: 'dueDate', after: [null, 10] }],
    ['page 2 by -dueDate (nulls)', { sort: '-dueDate', after: [null, 10] }],
    ['page 2 by priority', { sort: 'priority', after: [2, 10] }],
    ['status', { sort: '-number', status: ['in_progress'] }],
    ['two statuses', { sort: 'number', status: ['todo', 'canceled'] }],
    ['assignee', { sort: '-number', assignee: members[0] }],
    ['unassigned', { sort: '-number', assignee: 'none' }],
    ['label', { sort: '-number', label: 'security' }],
    ['due before', { sort: 'dueDate', dueBefore: '2026-06-01' }],
    ['due after', { sort: '-number', dueAfter: '2026-06-01' }],
    ['updated since', { sort: '-updatedAt', updatedSince: new Date('2026-11-01T00:00:00.000Z') }],
    ['updated since, default sort', { sort: '-number', updatedSince: new Date('2026-11-20T00:00:00.000Z') }],
    ['search', { sort: '-number', q: 'billing timeout' }],
    ['rare search', { sort: '-number', q: 'zebra' }],
    ['search + status + label', { sort: '-updatedAt', q: 'export', status: ['todo'], label: 'bug' }],
    ['assignee + status + due', { sort: 'dueDate', assignee: members[1], status: ['todo', 'in_progress'], dueBefore: '2027-01-01' }],
  ];

  it.each(cases)('no Seq Scan of tasks: %s', async (name, query) => {
    const plan = await scope().withTenant(orgA, (trx) => explain(trx, listTasksQuery(trx, orgA, projectId, { ...base, ...query }).compile()));
    expect(seqScansOfTasks(plan), JSON.stringify(plan, null, 1)).toEqual([]);
    // Unfiltered pages must also come out of an index in order: no sort of a whole project's tasks.
    if (/^(sort|page 2)/.test(name)) expect(sorts(plan), JSON.stringify(plan, null, 1)).toEqual([]);
    // and the query itself runs and returns a page
    const rows = await scope().withTenant(orgA, (trx) => listTasksQuery(trx, orgA, projectId, { ...base, ...query }).execute());
    expect(rows.length).toBeLessThanOrEqual(26);
  });

  it('the detector does see a Seq Scan of tasks when there is no usable index', async () => {
    const plan = await scope().withTenant(orgA, (trx) =>
      explain(trx, trx.selectFrom('tasks').select('id').where('description', 'like', '%flow%').compile()),
    );
    expect(seqScansOfTasks(plan)).toEqual(['Seq Scan on tasks']);
  });

  it('no Seq Scan of tasks: task by id, comments of a task', async () => {
    await scope().withTenant(orgA, async (trx) => {
      expect(seqScansOfTasks(await explain(trx, findTaskQuery(trx, orgA, sampleTaskId).compile()))).toEqual([]);
      expect((await findTask(trx, orgA, sampleTaskId))?.id).toBe(sampleTaskId);
      expect(seqScansOfTasks(await explain(trx, listCommentsQuery(trx, orgA, sampleTaskId, { limit: 25 }).compile()))).toEqual([]);
    });
  });
});
