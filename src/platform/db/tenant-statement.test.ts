import fc from 'fast-check';
import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { newId } from '../ids.ts';
import { createTestDatabase, type TestDatabase } from '../testing/test-db.ts';
import { inlineParameters } from './inline.ts';

/**
 * `withTenantStatement`: one statement in a transaction of its own with the tenant context — on Postgres
 * one simple-protocol query with its parameters inlined. It must isolate tenants exactly as `withTenant`
 * does, leave nothing behind on the pooled connection (success or failure), and carry any value intact.
 * Runs on PGlite (where it is `withTenant`), and on real Postgres when TEST_DATABASE_URL is set.
 */
describe(`withTenantStatement (${process.env.TEST_DATABASE_URL ? 'postgres' : 'pglite'})`, () => {
  let t: TestDatabase;
  const [a, b] = [newId(), newId()];
  const sent: string[] = [];

  beforeAll(async () => {
    // One connection: whatever a statement leaves on it, the next one sees.
    t = await createTestDatabase({ poolMax: 1, statementTimeoutMs: 4321, onQuery: (q) => sent.push(q.sql) });
    await t.db.owner.insertInto('feature_flags').values({ key: 'beta', default_value: JSON.stringify(false) }).execute();
  });
  afterAll(async () => t?.drop());

  const insertOverride = (tenant: string, value: unknown) =>
    sql<{ tenant_id: string; value: unknown }>`insert into feature_flag_overrides (tenant_id, id, flag_key, value)
      values (${tenant}, ${newId()}, 'beta', ${JSON.stringify(value)}::jsonb) returning tenant_id, value`.compile(t.db.app);

  it("writes under the tenant's context and returns the statement's rows; the other tenant sees none of them", async () => {
    const rows = await t.db.withTenantStatement(a, insertOverride(a, { who: 'a' }));
    expect(rows).toEqual([{ tenant_id: a, value: { who: 'a' } }]);
    const seenByB = await t.db.withTenantStatement(b, sql`select id from feature_flag_overrides`.compile(t.db.app));
    expect(seenByB).toEqual([]);
    const seenByA = await t.db.withTenant(a, (trx) => trx.selectFrom('feature_flag_overrides').select('value').execute());
    expect(seenByA.map((r) => r.value)).toEqual([{ who: 'a' }]);
  });

  it('is one round trip on Postgres (BEGIN, the statement and COMMIT otherwise)', async () => {
    const c = newId();
    sent.length = 0;
    await t.db.withTenantStatement(c, insertOverride(c, 'counted'));
    if (t.kind === 'postgres') expect(sent).toHaveLength(1);
    else expect(sent.length).toBeGreaterThan(1);
  });

  it("cannot write a row into another tenant (RLS), and the failure leaves no context on the connection", async () => {
    await expect(t.db.withTenantStatement(a, insertOverride(b, 'hijack'))).rejects.toThrow(/row-level security/);
    const after = await sql<{ tenant: string | null }>`select nullif(current_setting('app.tenant_id', true), '') as tenant`.execute(t.db.app);
    expect(after.rows[0]!.tenant).toBeNull();
    const seenByB = await t.db.withTenant(b, (trx) => trx.selectFrom('feature_flag_overrides').select('id').execute());
    expect(seenByB).toEqual([]);
  });

  it('runs with the transaction-local limits, which end with it, on a connection it leaves clean', async () => {
    const [inside] = await t.db.withTenantStatement(
      a,
      sql<{ tenant: string; idle: string; pid: number }>`select current_setting('app.tenant_id') as tenant, current_setting('idle_in_transaction_session_timeout') as idle, pg_backend_pid() as pid`.compile(t.db.app),
    );
    expect(inside!.tenant).toBe(a);
    // Sent with the statement (the session's own default is 0): proof the limits travel with it.
    if (t.kind === 'postgres') expect(inside!.idle).toBe('1min');
    // Same pooled connection afterwards (a pool of one): nothing of the tenant or the limits stayed on it.
    const after = await sql<{ tenant: string | null; idle: string; pid: number }>`select nullif(current_setting('app.tenant_id', true), '') as tenant, current_setting('idle_in_transaction_session_timeout') as idle, pg_backend_pid() as pid`.execute(t.db.app);
    expect(after.rows[0]!.pid).toBe(inside!.pid);
    expect(after.rows[0]!.tenant).toBeNull();
    if (t.kind === 'postgres') expect(after.rows[0]!.idle).toBe('0');
  });

  it('a failing statement rolls back whole: nothing it wrote before the error stays', async () => {
    const [d, twice] = [newId(), newId()];
    const q = sql`with first as (
        insert into feature_flag_overrides (tenant_id, id, flag_key, value) values (${d}, ${twice}, 'beta', '1') returning id
      ) insert into feature_flag_overrides (tenant_id, id, flag_key, value) select ${d}, ${twice}, 'beta', '2' from first`.compile(t.db.app);
    await expect(t.db.withTenantStatement(d, q)).rejects.toThrow(/duplicate key/);
    const left = await t.db.withTenant(d, (trx) => trx.selectFrom('feature_flag_overrides').select('id').execute());
    expect(left).toEqual([]);
  });

  it('property: any text (quotes, backslashes, $n, unicode) comes back exactly as sent', async () => {
    await fc.assert(
      fc.asyncProperty(fc.string({ unit: fc.oneof(fc.constantFrom("'", '\\', '$1', '$$', 'E\'', ';', '"', '\n', '--', 'é', '😀'), fc.string({ unit: 'grapheme', minLength: 1, maxLength: 1 })) }).filter((s) => !s.includes('\0')), async (s) => {
        const [row] = await t.db.withTenantStatement(a, sql<{ echo: string; len: number }>`select ${s}::text as echo, length(${s}::text) as len`.compile(t.db.app));
        expect(row!.echo).toBe(s);
        // The inliner itself, on either database (embedded, withTenantStatement binds parameters instead).
        const inlined = inlineParameters(sql`select ${s}::text as echo`.compile(t.db.app), 'test');
        const direct = await sql.raw<{ echo: string }>(inlined).execute(t.db.app);
        expect(direct.rows[0]!.echo).toBe(s);
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
