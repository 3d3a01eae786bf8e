import { sql, type Kysely } from 'kysely';
import { protectTenantTable } from '../src/platform/migrate/helpers.ts';

/**
 * Projects, tasks and task comments. Every table is tenant-owned (composite keys, RLS). Foreign keys stay
 * inside the module and carry tenant_id, so a row can never point into another tenant.
 * Timestamps are millisecond precision (timestamptz(3)) so keyset cursors round-trip through JS exactly.
 */
export async function up(db: Kysely<any>): Promise<void> {
  await sql`
    create table projects (
      tenant_id uuid not null,
      id uuid not null,
      key text not null check (key ~ '^[A-Z][A-Z0-9]{1,9}$'),
      name text not null check (char_length(name) between 1 and 100),
      description text not null default '' check (char_length(description) <= 2000),
      archived boolean not null default false,
      -- last task number handed out: incremented by UPDATE ... RETURNING in the creating transaction,
      -- so numbers are gap-free (a rollback returns the number) and unique (the row lock serializes).
      task_counter bigint not null default 0,
      version integer not null default 1,
      created_by uuid not null,
      created_at timestamptz(3) not null default now(),
      updated_at timestamptz(3) not null default now(),
      primary key (tenant_id, id),
      unique (tenant_id, key)
    )`.execute(db);
  await sql`create index projects_name_idx on projects (tenant_id, name, id)`.execute(db);
  await protectTenantTable(db, 'projects');

  await sql`
    create table tasks (
      tenant_id uuid not null,
      id uuid not null,
      project_id uuid not null,
      number bigint not null check (number > 0),
      title text not null check (char_length(title) between 1 and 200),
      description text not null default '' check (char_length(description) <= 20000),
      status text not null default 'todo' check (status in ('todo', 'in_progress', 'done', 'canceled')),
      priority smallint not null default 0 check (priority between 0 and 4),
      assignee_id uuid,
      labels text[] not null default '{}' check (cardinality(labels) <= 20),
      due_date date,
      version integer not null default 1,
      created_by uuid not null,
      created_at timestamptz(3) not null default now(),
      updated_at timestamptz(3) not null default now(),
      search tsvector generated always as (
        setweight(to_tsvector('english', title), 'A') || setweight(to_tsvector('english', description), 'B')
      ) stored,
      primary key (tenant_id, id),
      unique (tenant_id, project_id, number),
      foreign key (tenant_id, project_id) references projects (tenant_id, id) on delete cascade
    )`.execute(db);
  // One index per whitelisted sort (the unique constraint above serves `number`); `number` is the
  // tiebreaker so every keyset predicate is a row comparison the index can seek to.
  await sql`create index tasks_updated_idx on tasks (tenant_id, project_id, updated_at, number)`.execute(db);
  await sql`create index tasks_due_idx on tasks (tenant_id, project_id, due_date, number)`.execute(db);
  await sql`create index tasks_priority_idx on tasks (tenant_id, project_id, priority, number)`.execute(db);
  await sql`create index tasks_assignee_idx on tasks (tenant_id, assignee_id, project_id, number)`.execute(db);
  await sql`create index tasks_labels_idx on tasks using gin (labels)`.execute(db);
  await sql`create index tasks_search_idx on tasks using gin (search)`.execute(db);
  await protectTenantTable(db, 'tasks');

  await sql`
    create table task_comments (
      tenant_id uuid not null,
      id uuid not null,
      task_id uuid not null,
      author_id uuid not null,
      body text not null check (char_length(body) between 1 and 10000),
      created_at timestamptz(3) not null default now(),
      primary key (tenant_id, id),
      foreign key (tenant_id, task_id) references tasks (tenant_id, id) on delete cascade
    )`.execute(db);
  await sql`create index task_comments_task_idx on task_comments (tenant_id, task_id, id)`.execute(db);
  await protectTenantTable(db, 'task_comments');
}
