import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestDatabase, type TestDatabase } from '../testing/test-db.ts';
import { runWithUnitOfWorkSlot, setUnitOfWork } from './unit-of-work.ts';

const TENANT = '00000000-0000-7000-8000-0000000000aa';

/** A request's unit of work: its withTenant calls and (embedded) its other transactions commit or roll back together. */
describe(`unit of work (${process.env.TEST_DATABASE_URL ? 'postgres' : 'pglite'})`, () => {
  let t: TestDatabase;
  const sent: string[] = [];
  beforeAll(async () => {
    t = await createTestDatabase({ onQuery: (q) => sent.push(q.sql) });
  });
  afterAll(() => t.drop());

  const schedule = (name: string) => sql`insert into job_schedules (name, next_run_at) values (${name}, now())`;
  const exists = async (name: string) =>
    (await t.db.app.selectFrom('job_schedules').select('name').where('name', '=', name).executeTakeFirst()) !== undefined;

  async function inRequest(body: () => Promise<void>, end: 'commit' | 'rollback'): Promise<void> {
    await runWithUnitOfWorkSlot(async () => {
      const uow = t.db.openUnitOfWork(async () => {});
      setUnitOfWork(uow);
      try {
        await body();
      } finally {
        setUnitOfWork(undefined);
        await (end === 'commit' ? uow.commit() : uow.rollback());
      }
    });
  }

  it('joined calls commit together; a failing call rolls back only its own writes', async () => {
    await inRequest(async () => {
      await t.db.withTenant(TENANT, (trx) => schedule('uow.a').execute(trx));
      await expect(t.db.withTenant(TENANT, async (trx) => {
        await schedule('uow.b').execute(trx);
        throw new Error('this call fails');
      })).rejects.toThrow('this call fails');
      await t.db.withTenant(TENANT, (trx) => schedule('uow.c').execute(trx));
    }, 'commit');
    expect([await exists('uow.a'), await exists('uow.b'), await exists('uow.c')]).toEqual([true, false, true]);
  });

  it('commit(last): the last statement commits with the effects; one that raises refuses the COMMIT, nothing stays, the connection is clean', async () => {
    // A statement without row-level security (job_schedules' own row), as the idempotency layer's record.
    const last = (name: string, refuse: boolean) =>
      sql`with s as (insert into job_schedules (name, next_run_at) values (${name}, now()) returning 1)
          select cast(case when exists (select from s) and not ${refuse} then '1' else 'refused by the last statement' end as int)`.compile(t.db.app);
    await runWithUnitOfWorkSlot(async () => {
      const uow = t.db.openUnitOfWork(async () => {});
      setUnitOfWork(uow);
      await t.db.withTenant(TENANT, (trx) => schedule('uow.f').execute(trx));
      setUnitOfWork(undefined);
      const before = sent.length;
      await uow.commit(last('uow.f.last', false));
      // On pg the statement and COMMIT are one round trip; PGlite takes one statement per query.
      expect(sent.length - before).toBe(t.db.kind === 'postgres' ? 1 : 2);
    });
    expect([await exists('uow.f'), await exists('uow.f.last')]).toEqual([true, true]);
    for (let i = 0; i < 3; i++) {
      await runWithUnitOfWorkSlot(async () => {
        const uow = t.db.openUnitOfWork(async () => {});
        setUnitOfWork(uow);
        await t.db.withTenant(TENANT, (trx) => schedule(`uow.g${i}`).execute(trx));
        setUnitOfWork(undefined);
        await expect(uow.commit(last(`uow.g${i}.last`, true))).rejects.toThrow(/refused by the last statement/);
      });
      expect([await exists(`uow.g${i}`), await exists(`uow.g${i}.last`)]).toEqual([false, false]);
    }
    // Every pooled connection is out of any transaction and without a tenant: a plain read sees no tenant rows
    // and a write outside a transaction commits on its own.
    for (let i = 0; i < 4; i++) {
      expect((await sql<{ t: string | null }>`select nullif(current_setting('app.tenant_id', true), '') as t`.execute(t.db.app)).rows[0]!.t).toBeNull();
    }
    await schedule('uow.h').execute(t.db.app);
    expect(await exists('uow.h')).toBe(true);
  });

  it('a rolled-back unit of work leaves nothing, including nested transactions opened after it began', async () => {
    await inRequest(async () => {
      await t.db.withTenant(TENANT, (trx) => schedule('uow.d').execute(trx));
      if (t.db.kind === 'pglite') {
        // Embedded there is one connection: a plain transaction inside the request nests as a savepoint
        // instead of committing the request's transaction early.
        await t.db.app.transaction().execute((trx) => schedule('uow.e').execute(trx));
      }
    }, 'rollback');
    expect(await exists('uow.d')).toBe(false);
    expect(await exists('uow.e')).toBe(false);
  });
});

describe(`unit of work: nesting and settings (${process.env.TEST_DATABASE_URL ? 'postgres' : 'pglite'})`, () => {
  let t: TestDatabase;
  beforeAll(async () => {
    t = await createTestDatabase();
  });
  afterAll(() => t.drop());

  it('a withTenant nested inside another runs (no self-wait), and the outer call keeps its tenant', async () => {
    await runWithUnitOfWorkSlot(async () => {
      const uow = t.db.openUnitOfWork(async () => {});
      setUnitOfWork(uow);
      const seen = await t.db.withTenant(TENANT, async (trx) => {
        const inner = await t.db.withTenant('00000000-0000-7000-8000-0000000000bb', async (trx2) =>
          (await sql<{ t: string }>`select current_setting('app.tenant_id', true) as t`.execute(trx2)).rows[0]!.t,
        );
        const after = (await sql<{ t: string }>`select current_setting('app.tenant_id', true) as t`.execute(trx)).rows[0]!.t;
        return { inner, after };
      });
      setUnitOfWork(undefined);
      await uow.commit();
      expect(seen).toEqual({ inner: '00000000-0000-7000-8000-0000000000bb', after: TENANT });
    });
  }, 10_000);

  it('a setting one call makes (app.user_id) is gone in the next call', async () => {
    await runWithUnitOfWorkSlot(async () => {
      const uow = t.db.openUnitOfWork(async () => {});
      setUnitOfWork(uow);
      await t.db.withTenant(TENANT, (trx) => sql`select set_config('app.user_id', 'someone', true)`.execute(trx));
      const next = await t.db.withTenant(TENANT, async (trx) => (await sql<{ u: string }>`select current_setting('app.user_id', true) as u`.execute(trx)).rows[0]!.u);
      setUnitOfWork(undefined);
      await uow.rollback();
      expect(next).toBe('');
    });
  });
});
