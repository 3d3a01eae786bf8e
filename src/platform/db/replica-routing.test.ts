import { sql } from 'kysely';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startOwnReplicaPair, type OwnReplicaPair } from '../../../test/helpers/own-replica.ts';
import { newId } from '../ids.ts';
import { migrate } from '../migrate/migrator.ts';
import { protectTenantTable } from '../migrate/helpers.ts';
import { registry, replicaRoutingMetrics } from '../observability/metrics.ts';
import { openDatabase, type Database } from './database.ts';
import { createMemoryLsnStore, runWithReadSession } from './read-session.ts';

/**
 * Read-your-writes and lag handling on a real primary + streaming replica (started by the test on free
 * ports, torn down after). Services run only: it spawns two Postgres servers.
 */
const services = Boolean(process.env.TEST_DATABASE_URL);

async function metric(name: string, labels: Record<string, string>): Promise<number> {
  const m = (await registry.getSingleMetric(name)?.get()) as { values: Array<{ labels: Record<string, string>; value: number }> } | undefined;
  const v = m?.values.find((x) => Object.entries(labels).every(([k, val]) => x.labels[k] === val));
  return v?.value ?? 0;
}

describe.skipIf(!services)('replica routing with read-your-writes (own primary + streaming replica)', () => {
  let pair: OwnReplicaPair;
  let db: Database;
  let replicaAdmin: pg.Client;
  const tenant = newId();

  const write = (principal: string, id: string) =>
    runWithReadSession(() => principal, true, () =>
      db.withTenant(tenant, (trx) => sql`insert into rw_items (tenant_id, id) values (${tenant}, ${id})`.execute(trx)),
    );
  const read = (principal: string, id: string) =>
    runWithReadSession(() => principal, false, () =>
      db.withTenantRead(tenant, async (trx) => (await sql<{ n: number }>`select count(*)::int as n from rw_items where id = ${id}`.execute(trx)).rows[0]!.n),
    );

  beforeAll(async () => {
    pair = await startOwnReplicaPair();
    const setup = await openDatabase({ databaseUrl: pair.primary.url });
    await migrate(setup.owner, { kind: 'postgres' });
    await sql`create table rw_items (tenant_id uuid not null, id text not null, primary key (tenant_id, id))`.execute(setup.owner);
    await protectTenantTable(setup.owner, 'rw_items');
    // A write shared by several requests sets the tenant context itself (as billing_usage_ingest does).
    await sql`create function rw_insert(p_tenant uuid, p_id text) returns void language plpgsql security invoker as $fn$
      begin
        perform set_config('app.tenant_id', p_tenant::text, true);
        insert into rw_items (tenant_id, id) values (p_tenant, p_id);
      end $fn$`.execute(setup.owner);
    await setup.close();
    db = await openDatabase({
      databaseUrl: pair.primary.url,
      replicaUrls: [pair.replica.url],
      replicaMaxLagMs: 1_000,
      replicaCheckEveryMs: 100,
      connectTimeoutMs: 1_000,
      lsnStore: createMemoryLsnStore(),
      replicaMetrics: replicaRoutingMetrics,
    });
    replicaAdmin = new pg.Client({ connectionString: pair.replica.url });
    replicaAdmin.on('error', () => {});
    await replicaAdmin.connect();
    // The replica has caught up with the migrations.
    for (let i = 0; i < 100 && !db.replicas()[0]?.inRotation; i++) {
      await new Promise((r) => setTimeout(r, 100));
      await db.checkReplicas();
    }
    expect(db.replicas()[0]!.inRotation).toBe(true);
  }, 120_000);

  afterAll(async () => {
    await replicaAdmin?.end().catch(() => undefined);
    await db?.close();
    await pair?.destroy();
  });

  it('write then read at once, 200 times: the writer always sees the write; other reads use the replica', async () => {
    const replicaReadsBefore = await metric('plinth_db_reads_total', { target: 'replica' });
    let missed = 0;
    for (let i = 0; i < 200; i++) {
      const id = `w${i}`;
      await write('u:writer', id);
      if ((await read('u:writer', id)) !== 1) missed++;
    }
    expect(missed).toBe(0);
    // A principal that did not write reads from the replica.
    await db.checkReplicas();
    for (let i = 0; i < 5; i++) await read('u:other', 'w0');
    expect(await metric('plinth_db_reads_total', { target: 'replica' })).toBeGreaterThan(replicaReadsBefore);
  });

  it('replay paused: the writer falls back to the primary (never a stale read); the lagging replica leaves rotation and comes back', async () => {
    await replicaAdmin.query('select pg_wal_replay_pause()');
    try {
      const behindBefore = await metric('plinth_db_read_fallbacks_total', { reason: 'replica_behind' });
      for (let i = 0; i < 20; i++) {
        await write('u:writer', `p${i}`);
        expect(await read('u:writer', `p${i}`)).toBe(1);
      }
      expect(await metric('plinth_db_read_fallbacks_total', { reason: 'replica_behind' })).toBeGreaterThanOrEqual(behindBefore + 20);
      // Another principal may read the (still in-rotation) replica: it has not seen p0, which is eventual consistency, not an error.
      // Once the lag passes DATABASE_REPLICA_MAX_LAG_MS the replica leaves rotation.
      await new Promise((r) => setTimeout(r, 1_300));
      await write('u:someone', 'tick');
      await db.checkReplicas();
      expect(db.replicas()[0]!.inRotation).toBe(false);
      expect(await read('u:other', 'p0')).toBe(1);
    } finally {
      await replicaAdmin.query('select pg_wal_replay_resume()');
    }
    for (let i = 0; i < 50 && !db.replicas()[0]!.inRotation; i++) {
      await new Promise((r) => setTimeout(r, 100));
      await db.checkReplicas();
    }
    expect(db.replicas()[0]!.inRotation).toBe(true);
    expect(db.replicas()[0]!.lagMs).toBe(0);
  });

  it("a statement shared by several requests (withStatement) moves every listed writer's position, and only theirs", async () => {
    for (let i = 0; i < 50 && !db.replicas()[0]!.inRotation; i++) {
      await new Promise((r) => setTimeout(r, 100));
      await db.checkReplicas();
    }
    await replicaAdmin.query('select pg_wal_replay_pause()');
    try {
      for (let i = 0; i < 5; i++) {
        await db.withStatement(sql`select rw_insert(${tenant}::uuid, ${`s${i}`})`.compile(db.app), { writers: ['u:s1', 'u:s2', undefined] });
        // Both writers read their write at once (the primary, while the replica has not replayed it) ...
        expect(await read('u:s1', `s${i}`)).toBe(1);
        expect(await read('u:s2', `s${i}`)).toBe(1);
      }
      // ... while a principal the statement did not name reads the replica, which has not seen it.
      expect(db.replicas()[0]!.inRotation).toBe(true);
      expect(await read('u:bystander', 's0')).toBe(0);
    } finally {
      await replicaAdmin.query('select pg_wal_replay_resume()');
    }
  });

  it('replica down: reads go to the primary without an error, and are counted', async () => {
    await pair.replica.stop('immediate');
    try {
      const before = (await metric('plinth_db_read_fallbacks_total', { reason: 'replica_down' })) + (await metric('plinth_db_read_fallbacks_total', { reason: 'no_replica' }));
      for (let i = 0; i < 5; i++) expect(await read('u:other', 'w1')).toBe(1);
      const after = (await metric('plinth_db_read_fallbacks_total', { reason: 'replica_down' })) + (await metric('plinth_db_read_fallbacks_total', { reason: 'no_replica' }));
      expect(after - before).toBe(5);
      await db.checkReplicas();
      expect(db.replicas()[0]).toMatchObject({ inRotation: false, lagMs: -1 });
    } finally {
      await pair.replica.start();
    }
    for (let i = 0; i < 50 && !db.replicas()[0]!.inRotation; i++) {
      await new Promise((r) => setTimeout(r, 200));
      await db.checkReplicas();
    }
    expect(db.replicas()[0]!.inRotation).toBe(true);
  });

  it('READ ONLY reads with their own statement timeout', async () => {
    await expect(db.withTenantRead(tenant, (trx) => sql`insert into rw_items (tenant_id, id) values (${tenant}, 'ro')`.execute(trx), { readOnly: true })).rejects.toThrow(/read-only/);
    await expect(db.withTenantRead(tenant, (trx) => sql`select pg_sleep(1)`.execute(trx), { readOnly: true, statementTimeoutMs: 100 })).rejects.toThrow(/statement timeout/);
  });
});
