import { sql, type Kysely, type Transaction } from 'kysely';
import type { DB, DbScope } from '../../platform/db/database.ts';
import { PLATFORM_AUDIT_TENANT } from '../audit/index.ts';

/** The read models reporting owns (maintained from events) and, for rebuilds only, the source tables. */
export type ReportsTables = Pick<DB, 'reporting_task_facts' | 'reporting_project_weeks' | 'reporting_member_days'>;
export type RebuildTables = ReportsTables & Pick<DB, 'tasks' | 'audit_events' | 'audit_chains'>;
type Tx = Transaction<ReportsTables> | Kysely<ReportsTables>;

const OPEN = ['todo', 'in_progress'];
/** Monday of the UTC week containing ts. */
const weekOf = (ts: Date) => sql<string>`(date_trunc('week', ${ts}::timestamptz at time zone 'UTC'))::date`;

async function bumpWeek(trx: Tx, tenantId: string, projectId: string, at: Date, field: 'created' | 'completed', by: number): Promise<void> {
  await sql`
    insert into reporting_project_weeks (tenant_id, project_id, week, ${sql.ref(field)})
    values (${tenantId}, ${projectId}, ${weekOf(at)}, ${by})
    on conflict (tenant_id, project_id, week) do update set ${sql.ref(field)} = reporting_project_weeks.${sql.ref(field)} + ${by}`.execute(trx);
}

export function createReportsRepo(scope: DbScope<ReportsTables>) {
  return {
    scope,
    async memberActive(trx: Tx, tenantId: string, userId: string, at: Date): Promise<void> {
      await sql`
        insert into reporting_member_days (tenant_id, day, user_id)
        values (${tenantId}, (${at}::timestamptz at time zone 'UTC')::date, ${userId})
        on conflict do nothing`.execute(trx);
    },
    async taskCreated(trx: Tx, tenantId: string, t: { taskId: string; projectId: string; status: string; dueDate: string | null; at: Date }): Promise<void> {
      const done = t.status === 'done';
      const inserted = await trx
        .insertInto('reporting_task_facts')
        .values({
          tenant_id: tenantId,
          task_id: t.taskId,
          project_id: t.projectId,
          status: t.status,
          due_date: t.dueDate as never,
          created_at: t.at,
          completed_at: done ? t.at : null,
        })
        .onConflict((oc) => oc.columns(['tenant_id', 'task_id']).doNothing())
        .returning('task_id')
        .executeTakeFirst();
      if (!inserted) return;
      await bumpWeek(trx, tenantId, t.projectId, t.at, 'created', 1);
      if (done) await bumpWeek(trx, tenantId, t.projectId, t.at, 'completed', 1);
    },
    /** A status or due date change; entering `done` completes the task (cycle time ends), leaving it reopens. */
    async taskChanged(trx: Tx, tenantId: string, t: { taskId: string; status?: string; dueDate?: string | null; at: Date }): Promise<void> {
      const fact = await trx
        .selectFrom('reporting_task_facts')
        .select(['project_id', 'status', 'completed_at'])
        .where('tenant_id', '=', tenantId)
        .where('task_id', '=', t.taskId)
        .forUpdate()
        .executeTakeFirst();
      if (!fact) return; // created before reporting existed: the rebuild brings it in
      const set: Record<string, unknown> = {};
      if (t.dueDate !== undefined) set.due_date = t.dueDate;
      if (t.status !== undefined && t.status !== fact.status) {
        set.status = t.status;
        if (t.status === 'done' && !fact.completed_at) {
          set.completed_at = t.at;
          await bumpWeek(trx, tenantId, fact.project_id, t.at, 'completed', 1);
        } else if (t.status !== 'done' && fact.completed_at) {
          set.completed_at = null;
          await bumpWeek(trx, tenantId, fact.project_id, new Date(fact.completed_at), 'completed', -1);
        }
      }
      if (Object.keys(set).length === 0) return;
      await trx.updateTable('reporting_task_facts').set(set).where('tenant_id', '=', tenantId).where('task_id', '=', t.taskId).execute();
    },

    // --- reports (from the read models only) ---

    weeks(trx: Tx, tenantId: string, projectId: string, from: Date, to: Date) {
      return sql<{ week: string; created: number; completed: number }>`
        select week::text as week, created, completed from reporting_project_weeks
        where tenant_id = ${tenantId} and project_id = ${projectId} and week >= ${weekOf(from)} and week < ${to}::timestamptz::date
        order by week`.execute(trx);
    },
    async openByStatus(trx: Tx, tenantId: string, projectId: string): Promise<Record<string, number>> {
      const rows = await trx
        .selectFrom('reporting_task_facts')
        .select(['status', (e) => e.fn.countAll<number>().as('n')])
        .where('tenant_id', '=', tenantId)
        .where('project_id', '=', projectId)
        .where('status', 'in', OPEN)
        .groupBy('status')
        .execute();
      const out: Record<string, number> = Object.fromEntries(OPEN.map((s) => [s, 0]));
      for (const r of rows) out[r.status] = Number(r.n);
      return out;
    },
    async overdue(trx: Tx, tenantId: string, projectId: string, today: string): Promise<number> {
      const { rows } = await sql<{ n: number }>`
        select count(*)::int as n from reporting_task_facts
        where tenant_id = ${tenantId} and project_id = ${projectId}
          and status in ('todo', 'in_progress') and due_date is not null and due_date < ${today}::date`.execute(trx);
      return Number(rows[0]?.n ?? 0);
    },
    /** Median hours from creation to completion, for tasks completed in [from, to). */
    async medianCycleHours(trx: Tx, tenantId: string, projectId: string, from: Date, to: Date): Promise<{ median: number | null; count: number }> {
      const { rows } = await sql<{ median: number | null; n: number }>`
        select (percentile_cont(0.5) within group (order by extract(epoch from completed_at - created_at)) / 3600)::float8 as median,
               count(*)::int as n
        from reporting_task_facts
        where tenant_id = ${tenantId} and project_id = ${projectId}
          and completed_at is not null and completed_at >= ${from} and completed_at < ${to}`.execute(trx);
      return { median: rows[0]?.median == null ? null : Number(rows[0].median), count: Number(rows[0]?.n ?? 0) };
    },
    async activeMembers(trx: Tx, tenantId: string, from: Date, to: Date) {
      const { rows } = await sql<{ week: string; n: number }>`
        select (date_trunc('week', day))::date::text as week, count(distinct user_id)::int as n
        from reporting_member_days
        where tenant_id = ${tenantId} and day >= ${from}::timestamptz::date and day < ${to}::timestamptz::date
        group by 1 order by 1`.execute(trx);
      const total = await sql<{ n: number }>`
        select count(distinct user_id)::int as n from reporting_member_days
        where tenant_id = ${tenantId} and day >= ${from}::timestamptz::date and day < ${to}::timestamptz::date`.execute(trx);
      return { total: Number(total.rows[0]?.n ?? 0), weeks: rows.map((r) => ({ week: r.week, activeMembers: Number(r.n) })) };
    },
  };
}

export type ReportsRepo = ReturnType<typeof createReportsRepo>;

/**
 * Recomputes one org's read models from the source tables (tasks; the audit log for activity) and replaces
 * them, in one transaction. Returns how many rows of each model differed (drift). Completion times of tasks
 * done before reporting existed are approximated by their last update.
 */
export async function rebuildOrg(trx: Transaction<RebuildTables>, tenantId: string): Promise<Record<string, number>> {
  await sql`
    create temporary table rb_facts on commit drop as
    select t.tenant_id, t.id as task_id, t.project_id, t.status, t.due_date, t.created_at,
           case when t.status = 'done' then coalesce(f.completed_at, t.updated_at) end as completed_at
    from tasks t
    left join reporting_task_facts f on f.tenant_id = t.tenant_id and f.task_id = t.id
    where t.tenant_id = ${tenantId}`.execute(trx);
  await sql`
    create temporary table rb_weeks on commit drop as
    select tenant_id, project_id, week, sum(created)::int as created, sum(completed)::int as completed from (
      select tenant_id, project_id, (date_trunc('week', created_at at time zone 'UTC'))::date as week, 1 as created, 0 as completed from rb_facts
      union all
      select tenant_id, project_id, (date_trunc('week', completed_at at time zone 'UTC'))::date, 0, 1 from rb_facts where completed_at is not null
    ) x group by 1, 2, 3`.execute(trx);
  await sql`
    create temporary table rb_days on commit drop as
    select distinct tenant_id, (occurred_at at time zone 'UTC')::date as day, actor_user_id as user_id
    from audit_events
    where tenant_id = ${tenantId} and actor_user_id is not null
      and action in ('projects.task.create', 'projects.task.update', 'projects.comment.create')`.execute(trx);

  const diff = async (table: string, cols: string) => {
    const { rows } = await sql<{ n: number }>`
      select ((select count(*) from (select ${sql.raw(cols)} from ${sql.table(table)} where tenant_id = ${tenantId}
                                     except select ${sql.raw(cols)} from ${sql.table(`rb_${table.split('_').pop()}`)}) a)
            + (select count(*) from (select ${sql.raw(cols)} from ${sql.table(`rb_${table.split('_').pop()}`)}
                                     except select ${sql.raw(cols)} from ${sql.table(table)} where tenant_id = ${tenantId}) b))::int as n`.execute(trx);
    return Number(rows[0]?.n ?? 0);
  };
  const drift = {
    // Times come from events (when the change was published), a few ms after the row's own timestamps: not drift.
    taskFacts: await diff('reporting_task_facts', 'task_id, project_id, status, due_date, completed_at is null'),
    projectWeeks: await diff('reporting_project_weeks', 'project_id, week, created, completed'),
    memberDays: await diff('reporting_member_days', 'day, user_id'),
  };
  await sql`delete from reporting_task_facts where tenant_id = ${tenantId}`.execute(trx);
  await sql`delete from reporting_project_weeks where tenant_id = ${tenantId}`.execute(trx);
  await sql`delete from reporting_member_days where tenant_id = ${tenantId}`.execute(trx);
  await sql`insert into reporting_task_facts select * from rb_facts`.execute(trx);
  await sql`insert into reporting_project_weeks (tenant_id, project_id, week, created, completed) select * from rb_weeks`.execute(trx);
  await sql`insert into reporting_member_days (tenant_id, day, user_id) select * from rb_days`.execute(trx);
  return drift;
}

/** Every org with an audit chain (each org's creation is audited), for a rebuild of all orgs. */
/**
 * Every org with activity: each org's first audit event is written at its creation (chain heads appear
 * only once the sequencer has run, so they would miss a new org). Read as the owner: across tenants.
 */
export async function allOrgIds(owner: Kysely<RebuildTables>): Promise<string[]> {
  const rows = await owner.selectFrom('audit_events').select('tenant_id').distinct().orderBy('tenant_id').execute();
  return rows.map((r) => r.tenant_id).filter((id) => id !== PLATFORM_AUDIT_TENANT);
}
