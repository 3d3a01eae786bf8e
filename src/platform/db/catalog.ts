import { sql, type Kysely } from 'kysely';
import type { ForeignKey, Placement } from './distribution.ts';

/** What the catalog says about the public schema's tables: the facts the distribution rules are checked on. */
export interface TableShape {
  name: string;
  /** null: the table has no tenant_id column. */
  tenantIdNotNull: boolean | null;
  /** Columns of the primary key and of every unique constraint or unique index. */
  uniqueKeys: { name: string; columns: string[] }[];
  foreignKeys: { name: string; columns: string[]; references: string; referencedColumns: string[] }[];
}

export async function readTableShapes<T>(db: Kysely<T>): Promise<TableShape[]> {
  const tables = await sql<{ name: string; tenant_not_null: boolean | null }>`
    select c.relname as name,
           (select a.attnotnull from pg_attribute a where a.attrelid = c.oid and a.attname = 'tenant_id' and not a.attisdropped) as tenant_not_null
    from pg_class c join pg_namespace n on n.oid = c.relnamespace
    where n.nspname = 'public' and c.relkind in ('r', 'p')
    order by 1`.execute(db);
  const uniques = await sql<{ table: string; name: string; columns: string[] }>`
    select t.relname as table, i.relname as name,
           array(select a.attname::text from unnest(x.indkey) k join pg_attribute a on a.attrelid = t.oid and a.attnum = k) as columns
    from pg_index x join pg_class t on t.oid = x.indrelid join pg_class i on i.oid = x.indexrelid
    join pg_namespace n on n.oid = t.relnamespace
    where n.nspname = 'public' and x.indisunique`.execute(db);
  const fks = await sql<{ table: string; name: string; columns: string[]; references: string; referenced_columns: string[] }>`
    select t.relname as table, co.conname as name, r.relname as references,
           array(select a.attname::text from unnest(co.conkey) k join pg_attribute a on a.attrelid = t.oid and a.attnum = k) as columns,
           array(select a.attname::text from unnest(co.confkey) k join pg_attribute a on a.attrelid = r.oid and a.attnum = k) as referenced_columns
    from pg_constraint co join pg_class t on t.oid = co.conrelid join pg_class r on r.oid = co.confrelid
    join pg_namespace n on n.oid = t.relnamespace
    where n.nspname = 'public' and co.contype = 'f'`.execute(db);
  return tables.rows.map((t) => ({
    name: t.name,
    tenantIdNotNull: t.tenant_not_null,
    uniqueKeys: uniques.rows.filter((u) => u.table === t.name).map((u) => ({ name: u.name, columns: u.columns })),
    foreignKeys: fks.rows
      .filter((f) => f.table === t.name)
      .map((f) => ({ name: f.name, columns: f.columns, references: f.references, referencedColumns: f.referenced_columns })),
  }));
}

export function foreignKeysOf(shapes: TableShape[]): ForeignKey[] {
  return shapes.flatMap((t) => t.foreignKeys.map((f) => ({ table: t.name, references: f.references })));
}

/**
 * Where the schema breaks the placement rules (see distribution.ts): a table without a placement, a
 * distributed table whose tenant_id is nullable or missing from a unique key, a foreign key between
 * distributed tables that does not go through tenant_id, or one crossing placements Citus cannot join.
 */
export function placementViolations(shapes: TableShape[], placement: Record<string, Placement>): string[] {
  const bad: string[] = [];
  for (const s of shapes) {
    const from = placement[s.name];
    if (!from) {
      bad.push(`${s.name}: no placement`);
      continue;
    }
    if (from === 'distributed') {
      if (s.tenantIdNotNull !== true) bad.push(`${s.name}: tenant_id missing or nullable`);
      for (const u of s.uniqueKeys) if (!u.columns.includes('tenant_id')) bad.push(`${s.name}.${u.name}: unique key without tenant_id`);
    }
    for (const fk of s.foreignKeys) {
      const to = placement[fk.references];
      const label = `${s.name}.${fk.name} -> ${fk.references}`;
      if (from === 'distributed' && to === 'distributed') {
        const i = fk.columns.indexOf('tenant_id');
        if (i < 0 || fk.referencedColumns[i] !== 'tenant_id') bad.push(`${label}: not through tenant_id`);
      } else if (from === 'distributed' && to !== 'reference') {
        bad.push(`${label}: a distributed table may only reference co-located or reference tables`);
      } else if (from !== 'distributed' && to === 'distributed') {
        bad.push(`${label}: a ${from} table cannot reference a distributed one`);
      }
    }
  }
  for (const name of Object.keys(placement)) if (!shapes.some((s) => s.name === name)) bad.push(`${name}: placed but not in the schema`);
  return bad;
}
