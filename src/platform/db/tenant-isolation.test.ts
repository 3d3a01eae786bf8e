import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { newId } from '../ids.ts';
import { createTestDatabase, type TestDatabase } from '../testing/test-db.ts';

/**
 * The data rule everything else stands on: a tenant's transaction sees only its rows, no context sees
 * none, and a pooled connection never carries a tenant into the next transaction.
 * Runs on PGlite, and on real Postgres when TEST_DATABASE_URL is set.
 */
describe(`tenant isolation (${process.env.TEST_DATABASE_URL ? 'postgres' : 'pglite'})`, () => {
  let t: TestDatabase;
  const tenants = Array.from({ length: 50 }, () => newId());
  const [a, b] = tenants as [string, string];

  beforeAll(async () => {
    // A pool of 2 so 1,000 transactions reuse the same two connections many times.
    t = await createTestDatabase({ poolMax: 2 });
    await t.db.owner.insertInto('feature_flags').values({ key: 'beta', default_value: JSON.stringify(false) }).execute();
    for (const tenant of tenants) {
      await t.db.withTenant(tenant, (trx) =>
        trx
          .insertInto('feature_flag_overrides')
          .values({ tenant_id: tenant, id: newId(), flag_key: 'beta', value: JSON.stringify(tenant) })
          .execute(),
      );
    }
  });
  afterAll(async () => t?.drop());

  it('a tenant transaction sees only its own rows', async () => {
    const rowsA = await t.db.withTenant(a, (trx) => trx.selectFrom('feature_flag_overrides').selectAll().execute());
    expect(rowsA).toHaveLength(1);
    expect(rowsA[0]!.tenant_id).toBe(a);
    const rowsB = await t.db.withTenant(b, (trx) => trx.selectFrom('feature_flag_overrides').selectAll().execute());
    expect(rowsB.map((r) => r.tenant_id)).toEqual([b]);
  });

  it.skipIf(!process.env.TEST_DATABASE_URL)('a serial read (exports) runs without parallel workers, read only, under its tenant; the setting ends with it', async () => {
    const setting = (trx: Parameters<Parameters<typeof t.db.withTenantRead>[1]>[0]) =>
      sql<{ p: string; ro: string; tenant: string }>`select current_setting('max_parallel_workers_per_gather') as p, current_setting('transaction_read_only') as ro, current_setting('app.tenant_id') as tenant`.execute(trx);
    const normal = (await t.db.withTenantRead(a, setting)).rows[0]!;
    expect(normal.p).not.toBe('0');
    expect((await t.db.withTenantRead(a, setting, { readOnly: true, serial: true, statementTimeoutMs: 5_000 })).rows[0]).toEqual({ p: '0', ro: 'on', tenant: a });
    expect((await t.db.withTenantRead(b, setting, { serial: true })).rows[0]).toEqual({ p: '0', ro: 'off', tenant: b });
    // The pool of 2 hands out the same connections again: the setting did not stay on them.
    for (let i = 0; i < 4; i++) expect((await t.db.withTenantRead(a, setting)).rows[0]!.p).toBe(normal.p);
  });

  it('no tenant context sees zero rows, even outside any transaction', async () => {
    const rows = await t.db.app.selectFrom('feature_flag_overrides').selectAll().execute();
    expect(rows).toHaveLength(0);
    const inTrx = await t.db.app.transaction().execute((trx) => trx.selectFrom('feature_flag_overrides').selectAll().execute());
    expect(inTrx).toHaveLength(0);
  });

  it("cannot write a row into another tenant, nor update or delete another tenant's rows", async () => {
    await expect(
      t.db.withTenant(a, (trx) =>
        trx.insertInto('feature_flag_overrides').values({ tenant_id: b, id: newId(), flag_key: 'beta', value: '1' }).execute(),
      ),
    ).rejects.toThrow(/row-level security/);
    const updated = await t.db.withTenant(a, (trx) =>
      trx.updateTable('feature_flag_overrides').set({ value: '"hijacked"' }).where('tenant_id', '=', b).executeTakeFirst(),
    );
    expect(Number(updated.numUpdatedRows)).toBe(0);
    const deleted = await t.db.withTenant(a, (trx) =>
      trx.deleteFrom('feature_flag_overrides').where('tenant_id', '=', b).executeTakeFirst(),
    );
    expect(Number(deleted.numDeletedRows)).toBe(0);
    const rowsB = await t.db.withTenant(b, (trx) => trx.selectFrom('feature_flag_overrides').select('value').execute());
    expect(rowsB[0]!.value).toBe(b);
  });

  it('the app role is neither owner nor BYPASSRLS, and cannot switch roles', async () => {
    const { rows } = await sql<{ user: string; bypass: boolean; superuser: boolean }>`
      select current_user as user, rolbypassrls as bypass, rolsuper as superuser
      from pg_roles where rolname = current_user`.execute(t.db.app);
    expect(rows[0]).toEqual({ user: 'plinth_app', bypass: false, superuser: false });
    const owners = await sql<{ owner: string }>`
      select tableowner as owner from pg_tables where tablename = 'feature_flag_overrides'`.execute(t.db.app);
    expect(owners.rows[0]!.owner).not.toBe('plinth_app');
    if (t.kind === 'postgres' && !process.env.DATABASE_APP_URL) {
      // Connected as the owner but running as plinth_app: RESET ROLE must not reach the owner's powers
      // inside tenant-scoped code paths; RLS is forced, so even the owner sees only policy rows.
      const forced = await sql<{ f: boolean }>`
        select relforcerowsecurity as f from pg_class where relname = 'feature_flag_overrides'`.execute(t.db.app);
      expect(forced.rows[0]!.f).toBe(true);
    }
  });

  it('1,000 interleaved transactions over 50 tenants on a pool of 2 never leak a tenant', async () => {
    const jobs = Array.from({ length: 1000 }, (_, i) => tenants[i % tenants.length]!);
    // Shuffle so consecutive transactions on a connection usually belong to different tenants.
    for (let i = jobs.length - 1; i > 0; i--) {
      const j = Math.floor(Math.random() * (i + 1));
      [jobs[i], jobs[j]] = [jobs[j]!, jobs[i]!];
    }
    const leaks: string[] = [];
    await Promise.all(
      jobs.map(async (tenant, i) => {
        // Every few, interleave a context-free query on the same pool: it must see nothing.
        if (i % 10 === 0) {
          const none = await t.db.app.selectFrom('feature_flag_overrides').select('tenant_id').execute();
          if (none.length > 0) leaks.push(`no-context query saw ${none.length} rows`);
        }
        const seen = await t.db.withTenant(tenant, async (trx) => {
          const setting = await sql<{ v: string }>`select current_setting('app.tenant_id', true) as v`.execute(trx);
          const rows = await trx.selectFrom('feature_flag_overrides').select('tenant_id').execute();
          return { setting: setting.rows[0]!.v, rows };
        });
        if (seen.setting !== tenant) leaks.push(`context ${seen.setting} != ${tenant}`);
        if (seen.rows.length !== 1 || seen.rows[0]!.tenant_id !== tenant) {
          leaks.push(`tenant ${tenant} saw ${JSON.stringify(seen.rows)}`);
        }
      }),
    );
    expect(leaks).toEqual([]);
  });

  it('a failed transaction does not leave its tenant context on the connection', async () => {
    await expect(
      t.db.withTenant(a, async (trx) => {
        await trx.selectFrom('feature_flag_overrides').selectAll().execute();
        throw new Error('boom');
      }),
    ).rejects.toThrow('boom');
    const rows = await t.db.app.selectFrom('feature_flag_overrides').selectAll().execute();
    expect(rows).toHaveLength(0);
  });
});
