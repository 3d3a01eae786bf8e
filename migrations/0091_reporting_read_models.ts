import { sql, type Kysely } from 'kysely';
import { protectTenantTable } from '../src/platform/migrate/helpers.ts';

export const phase = 'expand';

/**
 * Report read models (reporting module), maintained from projects' task events and rebuilt from the source
 * tables by `plinth reports rebuild`. Reports answer from these, never from a scan of the OLTP tables.
 */
export async function up(db: Kysely<any>): Promise<void> {
  // One row per task: its current state as far as reports care.
  await sql`
    create table reporting_task_facts (
      tenant_id uuid not null,
      task_id uuid not null,
      project_id uuid not null,
      status text not null,
      due_date date,
      created_at timestamptz(3) not null,
      completed_at timestamptz(3),
      primary key (tenant_id, task_id)
    )`.execute(db);
  await sql`create index reporting_task_facts_status on reporting_task_facts (tenant_id, project_id, status)`.execute(db);
  await sql`
    create index reporting_task_facts_overdue on reporting_task_facts (tenant_id, project_id, due_date)
    where status in ('todo', 'in_progress') and due_date is not null`.execute(db);
  await sql`
    create index reporting_task_facts_completed on reporting_task_facts (tenant_id, project_id, completed_at)
    where completed_at is not null`.execute(db);
  await protectTenantTable(db, 'reporting_task_facts');

  // Per project and ISO week (Monday, UTC): tasks created and completed.
  await sql`
    create table reporting_project_weeks (
      tenant_id uuid not null,
      project_id uuid not null,
      week date not null,
      created integer not null default 0,
      completed integer not null default 0,
      primary key (tenant_id, project_id, week)
    )`.execute(db);
  await protectTenantTable(db, 'reporting_project_weeks');

  // A member is active on a day they changed something (created/updated a task, commented).
  await sql`
    create table reporting_member_days (
      tenant_id uuid not null,
      day date not null,
      user_id uuid not null,
      primary key (tenant_id, day, user_id)
    )`.execute(db);
  await protectTenantTable(db, 'reporting_member_days');
}
