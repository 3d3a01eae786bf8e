import { sql, type Kysely } from 'kysely';
import { setTenant } from './database.ts';
import { TABLE_PLACEMENT, type Placement } from './distribution.ts';

/**
 * Hard-deletes every row of one tenant from every distributed (tenant-owned) table, in one owner
 * transaction in the tenant's context (FORCE RLS applies to the owner too). Driven by the placement map,
 * so a new tenant table cannot be forgotten: the map must place every table (distribution.test.ts).
 * Tables are emptied children first, in the order their foreign keys require. Returns rows deleted per table.
 */
export async function purgeTenant(owner: Kysely<any>, tenantId: string, placement: Record<string, Placement> = TABLE_PLACEMENT): Promise<Record<string, number>> {
  const tables = Object.keys(placement).filter((t) => placement[t] === 'distributed');
  return owner.transaction().execute(async (trx) => {
    await setTenant(trx, tenantId);
    const fks = await sql<{ child: string; parent: string }>`
      select c.conrelid::regclass::text as child, c.confrelid::regclass::text as parent
      from pg_constraint c where c.contype = 'f' and c.conrelid <> c.confrelid`.execute(trx);
    const ordered: string[] = [];
    const visit = (t: string, path: string[]) => {
      if (ordered.includes(t) || path.includes(t)) return;
      for (const fk of fks.rows.filter((f) => f.parent === t && tables.includes(f.child))) visit(fk.child, [...path, t]);
      ordered.push(t);
    };
    for (const t of tables) visit(t, []);
    const deleted: Record<string, number> = {};
    for (const t of ordered) {
      const r = await sql`delete from ${sql.table(t)} where tenant_id = ${tenantId}`.execute(trx);
      deleted[t] = Number(r.numAffectedRows ?? 0);
    }
    return deleted;
  });
}
