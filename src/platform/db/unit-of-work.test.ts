import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestDatabase, type TestDatabase } from '../testing/test-db.ts';
import { runWithUnitOfWorkSlot, setUnitOfWork } from './unit-of-work.ts';

const TENANT = '00000000-0000-7000-8000-0000000000aa';

/** A request's unit of work: its withTenant calls and (embedded) its other transactions commit or roll back together. */
describe(`unit of work (${process.env.TEST_DATABASE_URL ? 'postgres' : 'pglite'})`, () => {
  let t: TestDatabase;
  beforeAll(async () => {
    t = await createTestDatabase();
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
