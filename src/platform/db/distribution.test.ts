import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestDatabase, type TestDatabase } from '../testing/test-db.ts';
import { foreignKeysOf, placementViolations, readTableShapes, type TableShape } from './catalog.ts';
import { citusDistributionSql, TABLE_PLACEMENT } from './distribution.ts';

/**
 * The co-location rule of a tenant-sharded database (Citus), checked on the migrated schema: the
 * conditions under which `create_distributed_table(…, 'tenant_id')` accepts the tables and each tenant's
 * rows, joins and constraints stay on one node.
 */
let t: TestDatabase;
let shapes: TableShape[];
beforeAll(async () => {
  t = await createTestDatabase();
  shapes = await readTableShapes(t.db.owner);
});
afterAll(() => t?.drop());

describe('sharding readiness', () => {
  it('every table is placed, and tenant tables co-locate on tenant_id (keys, unique constraints, foreign keys)', () => {
    expect(placementViolations(shapes, TABLE_PLACEMENT)).toEqual([]);
  });

  it('each kind of violation is reported', () => {
    const bad: TableShape[] = [
      { name: 'a', tenantIdNotNull: false, uniqueKeys: [{ name: 'a_code', columns: ['code'] }], foreignKeys: [] },
      { name: 'b', tenantIdNotNull: true, uniqueKeys: [], foreignKeys: [{ name: 'b_a', columns: ['a_id'], references: 'a', referencedColumns: ['id'] }] },
      { name: 'c', tenantIdNotNull: null, uniqueKeys: [], foreignKeys: [{ name: 'c_b', columns: ['tenant_id', 'b_id'], references: 'b', referencedColumns: ['tenant_id', 'id'] }] },
      { name: 'd', tenantIdNotNull: null, uniqueKeys: [], foreignKeys: [] },
    ];
    expect(placementViolations(bad, { a: 'distributed', b: 'distributed', c: 'local', gone: 'local' })).toEqual([
      'a: tenant_id missing or nullable',
      'a.a_code: unique key without tenant_id',
      'b.b_a -> a: not through tenant_id',
      'c.c_b -> b: a local table cannot reference a distributed one',
      'd: no placement',
      'gone: placed but not in the schema',
    ]);
  });

  it('the Citus plan places every table once, each distributed table after the tables it references', () => {
    const plan = citusDistributionSql(foreignKeysOf(shapes));
    const position = (table: string) => plan.findIndex((s) => s.includes(`('${table}'`));
    const placed = Object.keys(TABLE_PLACEMENT).filter((n) => TABLE_PLACEMENT[n] !== 'local');
    for (const name of placed) expect(position(name), name).toBeGreaterThanOrEqual(0);
    expect(plan).toHaveLength(placed.length);
    for (const { table, references } of foreignKeysOf(shapes)) {
      if (TABLE_PLACEMENT[table] === 'distributed' && table !== references) expect(position(references)).toBeLessThan(position(table));
    }
    expect(plan).toContain("select create_distributed_table('organizations', 'tenant_id');");
    expect(() => citusDistributionSql([{ table: 'a', references: 'b' }, { table: 'b', references: 'a' }], { a: 'distributed', b: 'distributed' }))
      .toThrow(/cycle/);
  });
});
