import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { checkAppLogin, setAppPassword } from '../../src/platform/db/app-role.ts';
import { openDatabase, type Database } from '../../src/platform/db/database.ts';
import { isDatabaseUnavailable, isLoginRefused } from '../../src/platform/db/unavailable.ts';
import { protectTenantTable } from '../../src/platform/migrate/helpers.ts';
import { migrate } from '../../src/platform/migrate/migrator.ts';
import { havePgBouncer, havePostgresBinaries, startPgBouncer, startScramPostgres, type PgBouncer, type ScramPostgres } from '../helpers/prod-services.ts';

// Runs with the service suites (TEST_DATABASE_URL set) on a machine with pgbouncer and the Postgres binaries;
// it starts its own password-checking Postgres and PgBouncer on loopback ports.
const enabled = Boolean(process.env.TEST_DATABASE_URL) && havePgBouncer && havePostgresBinaries;
const APP_PASSWORD = 'app-password-0123456789';
const A = '0190a000-0000-7000-8000-00000000000a';
const B = '0190b000-0000-7000-8000-00000000000b';

describe.skipIf(!enabled)('the app role through PgBouncer (transaction pooling)', () => {
  let pgs: ScramPostgres;
  let bouncer: PgBouncer;
  let db: Database;

  beforeAll(async () => {
    pgs = await startScramPostgres();
    const setup = await openDatabase({ databaseUrl: pgs.ownerUrl() });
    await migrate(setup.owner, { kind: 'postgres' });
    await setAppPassword(setup.owner, APP_PASSWORD);
    await sql`create table pgb_notes (tenant_id uuid not null, id int not null, body text, primary key (tenant_id, id))`.execute(setup.owner);
    await protectTenantTable(setup.owner, 'pgb_notes');
    await setup.close();
    bouncer = await startPgBouncer(pgs.ownerUrl(), pgs.port, { poolSize: 3 });
    db = await openDatabase({
      databaseUrl: pgs.ownerUrl(),
      databaseAppUrl: bouncer.url('plinth_app', APP_PASSWORD, 'postgres'),
      statementTimeoutMs: 300,
      poolMax: 12,
    });
  }, 120_000);

  afterAll(async () => {
    await db?.close().catch(() => undefined);
    await bouncer?.destroy();
    await pgs?.destroy();
  });

  it('connects as plinth_app (no startup options) and keeps tenants apart across shared server connections', async () => {
    const who = await sql<{ u: string }>`select current_user as u`.execute(db.app);
    expect(who.rows[0]!.u).toBe('plinth_app');
    await db.withTenant(A, (trx) => sql`insert into pgb_notes values (${A}, 1, 'a')`.execute(trx));
    await db.withTenant(B, (trx) => sql`insert into pgb_notes values (${B}, 1, 'b')`.execute(trx));
    // 12 clients over 3 server connections, interleaved: every transaction sees only its own tenant.
    const seen = await Promise.all(
      Array.from({ length: 60 }, (_, i) => {
        const tenant = i % 2 ? A : B;
        return db.withTenant(tenant, async (trx) => {
          const { rows } = await sql<{ tenant_id: string }>`select tenant_id from pgb_notes`.execute(trx);
          await sql`select pg_sleep(0.005)`.execute(trx);
          return { tenant, rows: rows.map((r) => r.tenant_id) };
        });
      }),
    );
    for (const s of seen) expect(s.rows).toEqual([s.tenant]);
    // Outside a tenant transaction no context leaks in from a previous client of the server connection.
    const none = await sql<{ n: number }>`select count(*)::int as n from pgb_notes`.execute(db.app);
    expect(none.rows[0]!.n).toBe(0);
  });

  it('applies the statement timeout inside tenant transactions (SET LOCAL) and the role default outside', async () => {
    const err = await db.withTenant(A, (trx) => sql`select pg_sleep(1)`.execute(trx)).catch((e: { code?: string }) => e);
    expect((err as { code?: string }).code).toBe('57014'); // query_canceled: statement timeout
    // The SET LOCAL ended with its transaction: the server connection is back on the role's default.
    const outside = await sql<{ t: string }>`select current_setting('statement_timeout') as t`.execute(db.app);
    expect(outside.rows[0]!.t).toBe('30s');
  });

  it('a wrong app password is refused by PgBouncer and reported as unavailable (503), not as a 500', async () => {
    const wrong = await openDatabase({ databaseUrl: pgs.ownerUrl(), databaseAppUrl: bouncer.url('plinth_app', 'not-the-password', 'postgres') });
    try {
      const err = await wrong.ping().catch((e: unknown) => e);
      expect(err).toBeInstanceOf(Error);
      expect(isDatabaseUnavailable(err)).toBe(true);
      expect(isLoginRefused(err)).toBe(true);
      // At start the same error stops the process with one line naming the cause.
      await expect(checkAppLogin(wrong)).rejects.toThrow(/refused the plinth_app login: .*authentication failed.*set-app-password/);
    } finally {
      await wrong.close();
    }
  });

  it('straight to Postgres too (SQLSTATE 28P01): refused at start, 503 at run time', async () => {
    const direct = `postgres://plinth_app:not-the-password@127.0.0.1:${pgs.port}/postgres`;
    const wrong = await openDatabase({ databaseUrl: pgs.ownerUrl(), databaseAppUrl: direct });
    try {
      const err = await wrong.ping().catch((e: { code?: string }) => e);
      expect((err as { code?: string }).code).toBe('28P01');
      expect(isDatabaseUnavailable(err)).toBe(true);
      await expect(checkAppLogin(wrong)).rejects.toThrow(/refused the plinth_app login: password authentication failed/);
    } finally {
      await wrong.close();
    }
  });
});
