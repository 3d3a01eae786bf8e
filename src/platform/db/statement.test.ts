import fc from 'fast-check';
import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { newId } from '../ids.ts';
import { createTestDatabase, type TestDatabase } from '../testing/test-db.ts';
import { inlineParameters } from './inline.ts';

/**
 * `withStatement`: one statement in a transaction of its own with no tenant context, for a SECURITY INVOKER
 * function that sets each org's context itself (a write shared by several orgs' requests). Tenant tables
 * must refuse it anything outside such a context, a failure must roll back whole and leave nothing on the
 * pooled connection, and it is one round trip. Runs on PGlite, and on real Postgres when TEST_DATABASE_URL is set.
 */
describe(`withStatement (${process.env.TEST_DATABASE_URL ? 'postgres' : 'pglite'})`, () => {
  let t: TestDatabase;
  const [a, b] = [newId(), newId()];
  const sent: string[] = [];

  beforeAll(async () => {
    // One connection: whatever a statement leaves on it, the next one sees.
    t = await createTestDatabase({ poolMax: 1, onQuery: (q) => sent.push(q.sql) });
    await t.db.owner.insertInto('feature_flags').values([{ key: 'beta', default_value: JSON.stringify(false) }, { key: 'gamma', default_value: JSON.stringify(false) }]).execute();
    // Per row: the org's context, then its insert (RLS checks the row against the context just set).
    await sql`create function test_overrides_put(p_rows json) returns setof uuid language plpgsql security invoker as $fn$
      declare
        v_row json;
      begin
        for v_row in select value from json_array_elements(p_rows) loop
          perform set_config('app.tenant_id', v_row ->> 'context', true);
          insert into feature_flag_overrides (tenant_id, id, flag_key, value)
            values ((v_row ->> 'tenant')::uuid, (v_row ->> 'id')::uuid, v_row ->> 'flag', to_jsonb(v_row ->> 'value'));
          return next (v_row ->> 'tenant')::uuid;
        end loop;
      end $fn$`.execute(t.db.owner);
    await sql`grant execute on function test_overrides_put(json) to plinth_app`.execute(t.db.owner);
  });
  afterAll(async () => t?.drop());

  const put = (rows: Array<{ context: string; tenant: string; value: string; id?: string; flag?: string }>) =>
    sql<{ test_overrides_put: string }>`select test_overrides_put(${JSON.stringify(rows.map((r) => ({ id: newId(), flag: 'beta', ...r })))}::json)`.compile(t.db.app);
  const valuesOf = async (tenant: string) =>
    (await t.db.withTenant(tenant, (trx) => trx.selectFrom('feature_flag_overrides').select('value').orderBy('value').execute())).map((r) => r.value);

  it("writes several orgs' rows in one statement, each in its own context; each org sees only its own", async () => {
    sent.length = 0;
    const rows = await t.db.withStatement(put([{ context: a, tenant: a, value: 'a1' }, { context: b, tenant: b, value: 'b1' }, { context: a, tenant: a, value: 'a2', flag: 'gamma' }]));
    expect(rows.map((r) => r.test_overrides_put)).toEqual([a, b, a]);
    // One round trip on Postgres; PGlite runs it as one statement as well.
    expect(sent).toHaveLength(1);
    expect(await valuesOf(a)).toEqual(['a1', 'a2']);
    expect(await valuesOf(b)).toEqual(['b1']);
  });

  it('has no tenant context of its own: a tenant table shows no rows and refuses a write', async () => {
    expect(await t.db.withStatement(sql`select id from feature_flag_overrides`.compile(t.db.app))).toEqual([]);
    await expect(t.db.withStatement(sql`insert into feature_flag_overrides (tenant_id, id, flag_key, value) values (${a}, ${newId()}, 'beta', '1')`.compile(t.db.app))).rejects.toThrow(/row-level security/);
  });

  it("a row for another org than the context set is refused (RLS), and the whole statement rolls back, the other orgs' rows too", async () => {
    const c = newId();
    await expect(t.db.withStatement(put([{ context: c, tenant: c, value: 'c1' }, { context: c, tenant: b, value: 'hijack' }]))).rejects.toThrow(/row-level security/);
    expect(await valuesOf(c)).toEqual([]);
    expect(await valuesOf(b)).toEqual(['b1']);
  });

  it('leaves nothing on the pooled connection, after a success or a failure', async () => {
    const d = newId();
    const id = newId();
    await t.db.withStatement(put([{ context: d, tenant: d, value: 'd1', id }]));
    // The same id again: a duplicate key, after the function set d's context.
    await expect(t.db.withStatement(put([{ context: d, tenant: d, value: 'd2', id, flag: 'gamma' }]))).rejects.toThrow(/duplicate key/);
    const after = await sql<{ tenant: string | null }>`select nullif(current_setting('app.tenant_id', true), '') as tenant`.execute(t.db.app);
    expect(after.rows[0]!.tenant).toBeNull();
    expect(await valuesOf(d)).toEqual(['d1']);
  });

  it("spreads the statement's time over the orgs it served, by the weights given", async () => {
    const [e, f] = [newId(), newId()];
    await t.db.withStatement(put([{ context: e, tenant: e, value: 'e' }, { context: f, tenant: f, value: 'f' }]), { costs: new Map([[e, 3], [f, 1]]) });
    let sums = new Map<string, { dbMs: number }>();
    await t.db.costs.flush(async (s) => {
      sums = s;
    });
    const [me, mf] = [sums.get(e)!.dbMs, sums.get(f)!.dbMs];
    expect(mf).toBeGreaterThan(0);
    expect(me / mf).toBeCloseTo(3, 5);
  });
});

/** The parameter inliner behind the unit of work's last statement and COPY (simple-protocol text). */
describe(`inlineParameters (${process.env.TEST_DATABASE_URL ? 'postgres' : 'pglite'})`, () => {
  let t: TestDatabase;
  beforeAll(async () => {
    t = await createTestDatabase();
  });
  afterAll(async () => t?.drop());

  it('property: any text (quotes, backslashes, $n, unicode) comes back exactly as sent', async () => {
    await fc.assert(
      fc.asyncProperty(fc.string({ unit: fc.oneof(fc.constantFrom("'", '\\', '$1', '$$', 'E\'', ';', '"', '\n', '--', 'é', '😀'), fc.string({ unit: 'grapheme', minLength: 1, maxLength: 1 })) }).filter((s) => !s.includes('\0')), async (s) => {
        const inlined = inlineParameters(sql`select ${s}::text as echo, length(${s}::text) as len`.compile(t.db.app), 'test');
        const direct = await sql.raw<{ echo: string; len: number }>(inlined).execute(t.db.app);
        expect(direct.rows[0]!.echo).toBe(s);
        expect(direct.rows[0]!.len).toBe([...s].length);
      }),
      { numRuns: 60 },
    );
  });

  it('refuses a NUL in a parameter (the simple protocol would cut the query there) and an unused or missing placeholder', () => {
    expect(() => inlineParameters({ sql: 'select $1', parameters: ['a\0b'] }, 'test')).toThrow(/NUL/);
    expect(() => inlineParameters({ sql: 'select $2', parameters: ['a'] }, 'test')).toThrow(/without a parameter/);
    expect(() => inlineParameters({ sql: 'select 1', parameters: ['a'] }, 'test')).toThrow(/no placeholder/);
    // A $n that is not Kysely's (in a string literal, reused, out of order) would splice a value into SQL text.
    expect(() => inlineParameters({ sql: "select '$1', $1", parameters: ['x'] }, 'test')).toThrow(/out of order/);
    expect(() => inlineParameters({ sql: 'select $2, $1', parameters: ['x', 'y'] }, 'test')).toThrow(/out of order/);
    expect(() => inlineParameters({ sql: 'select $1, $1', parameters: ['x'] }, 'test')).toThrow(/out of order/);
    expect(inlineParameters({ sql: 'select $1, $2, $3', parameters: ["it's", 'a\\b', null] }, 'test')).toBe(`select 'it''s',  E'a\\\\b', NULL`);
  });
});
