import { sql, type QueryExecutorProvider } from 'kysely';

/** The policy every tenant table carries: rows are visible and writable only inside their tenant's context.
 * nullif: after a transaction-scoped set_config ends, the setting reads '' rather than NULL. */
const TENANT_PREDICATE = sql.raw(`tenant_id = nullif(current_setting('app.tenant_id', true), '')::uuid`);

/**
 * Puts a tenant-owned table under row-level security (ENABLE + FORCE, so the owner is not exempt either)
 * and grants the app role the listed privileges. Call it in the migration that creates the table.
 */
export async function protectTenantTable(
  db: QueryExecutorProvider,
  table: string,
  privileges: Array<'select' | 'insert' | 'update' | 'delete'> = ['select', 'insert', 'update', 'delete'],
): Promise<void> {
  const t = sql.table(table);
  await sql`alter table ${t} enable row level security`.execute(db);
  await sql`alter table ${t} force row level security`.execute(db);
  await sql`create policy tenant_isolation on ${t} using (${TENANT_PREDICATE}) with check (${TENANT_PREDICATE})`.execute(db);
  await grantApp(db, table, privileges);
}

/** Grants the app role privileges on a table that is not tenant-owned (users, sessions, outbox). */
export async function grantApp(
  db: QueryExecutorProvider,
  table: string,
  privileges: Array<'select' | 'insert' | 'update' | 'delete'>,
): Promise<void> {
  if (privileges.length === 0) return;
  await sql`grant ${sql.raw(privileges.join(', '))} on ${sql.table(table)} to plinth_app`.execute(db);
}
