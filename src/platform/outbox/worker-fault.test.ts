import { fork, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import { fileURLToPath } from 'node:url';
import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { bundleForNode } from '../../../test/helpers/bundle.ts';
import { countEffects, createEffectsTable, waitFor } from '../../../test/helpers/jobs.ts';
import { haveRedisServer, startOwnRedis, type OwnRedis } from '../../../test/helpers/own-services.ts';
import { createTestPlatform, type TestPlatform } from '../../../test/helpers/test-platform.ts';
import { newId } from '../ids.ts';

const WORKER = fileURLToPath(new URL('../../../test/fixtures/jobs/fault-worker.ts', import.meta.url));
const EVENTS = 2_000;
const KILLS = Number(process.env.FAULT_KILLS ?? 20);
const POOL = 3;
const enabled = Boolean(process.env.TEST_DATABASE_URL && process.env.TEST_REDIS_URL) && haveRedisServer;

/**
 * Fault test: real Postgres (throwaway database) + a private redis-server, a `plinth worker` process
 * killed with SIGKILL mid-job 20 times while it works through 2,000 events → 0 lost, 0 duplicate effects.
 */
describe.skipIf(!enabled)('worker killed -9 mid-job, 20 times, during 2,000 events', () => {
  let tp: TestPlatform;
  let redis: OwnRedis;
  let worker: string;
  const children: ChildProcess[] = [];

  beforeAll(async () => {
    // 23 worker processes start during the run: bundled, each boots in about half the time tsx needs.
    worker = await bundleForNode(WORKER);
    redis = await startOwnRedis();
    tp = await createTestPlatform({ env: { REDIS_URL: redis.url } });
    await createEffectsTable(tp.db.owner, 'fault_effects');
  });
  afterAll(async () => {
    for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
    await tp?.close();
    await redis?.stop();
    if (worker) fs.rmSync(worker, { force: true });
  });

  function spawnWorker(): ChildProcess {
    const child = fork(worker, [], {
      execArgv: [],
      stdio: ['ignore', 'ignore', 'inherit', 'ipc'],
      env: {
        ...process.env,
        NODE_ENV: 'test',
        LOG_LEVEL: 'error',
        DATABASE_URL: tp.testDb.url,
        REDIS_URL: redis.url,
        REDIS_PREFIX: tp.config.redisPrefix,
        JOBS_CONCURRENCY: '2',
        JOBS_POLL_MS: '20',
        JOBS_STALLED_MS: '1000',
        JOBS_SWEEP_AFTER_MS: '5000',
        DATABASE_POOL_MAX: '6',
      },
    });
    children.push(child);
    return child;
  }

  const ready = (p: ChildProcess) =>
    new Promise<void>((resolve, reject) => {
      p.once('message', () => resolve());
      p.once('exit', (code) => reject(new Error(`worker exited (${code}) before it was ready`)));
    });
  const exited = (p: ChildProcess) => new Promise<void>((resolve) => (p.exitCode !== null || p.signalCode !== null ? resolve() : p.once('exit', () => resolve())));
  const deliveryRows = async () =>
    (await sql<{ n: number }>`select count(*)::int as n from job_deliveries`.execute(tp.db.owner)).rows[0]!.n;
  const effectRows = async () =>
    (await sql<{ n: number }>`select count(*)::int as n from fault_effects`.execute(tp.db.owner)).rows[0]!.n;

  it('0 lost, 0 duplicate effects', async () => {
    const started = Date.now();
    const ids: string[] = [];
    const tenants = [newId(), newId(), newId()];
    const publish = async (batch: number) => {
      const tenant = tenants[batch % tenants.length]!;
      await tp.db.withTenant(tenant, async (trx) => {
        for (let j = 0; j < EVENTS / KILLS; j++) ids.push((await tp.events.add(trx, { name: 'fault.work', tenantId: tenant, payload: { batch, j } })).id);
      });
    };

    // A small pool of workers keeps the run short on a busy machine: replacements boot in the background
    // while the others work. Each round publishes a batch, waits until it is being processed, then kills
    // the oldest ready worker -9 mid-batch and starts a new one.
    const readyWorkers: ChildProcess[] = [];
    const launch = () => {
      const child = spawnWorker();
      void ready(child).then(() => readyWorkers.push(child), () => {});
    };
    for (let i = 0; i < POOL; i++) launch();
    for (let kill = 0; kill < KILLS; kill++) {
      await waitFor(async () => readyWorkers.length, (n) => n >= 2, 60_000, 20); // one stays up after the kill
      await publish(kill);
      // A batch of deliveries commits as one transaction, so committed effects cannot show one in progress:
      // wait until the round is relayed (its deliveries exist), then kill at a random moment of its processing.
      await waitFor(deliveryRows, (n) => n >= (kill + 1) * (EVENTS / KILLS), 30_000, 5);
      await new Promise((r) => setTimeout(r, 100 + Math.random() * 600));
      const victim = readyWorkers.shift()!;
      victim.kill('SIGKILL');
      await exited(victim);
      launch();
      if (process.env.FAULT_DEBUG) console.log(`kill ${kill + 1} at ${Date.now() - started} ms, effects ${await effectRows()}`);
    }
    const doneAtLastKill = await effectRows();
    expect(doneAtLastKill).toBeLessThan(EVENTS); // the last kill really happened mid-run

    await waitFor(
      async () => (await sql<{ n: number }>`select count(*)::int as n from job_deliveries where status = 'done'`.execute(tp.db.app)).rows[0]!.n,
      (n) => n === EVENTS,
      60_000,
      100,
    );
    await waitFor(async () => readyWorkers.length, (n) => n >= POOL, 60_000, 20);
    const stops = readyWorkers.map(async (w) => {
      w.kill('SIGTERM');
      await exited(w);
      return w.exitCode;
    });
    expect(await Promise.all(stops)).toEqual(readyWorkers.map(() => 0)); // graceful shutdown

    const effects = await countEffects(tp.db.owner, 'fault_effects');
    const lost = ids.filter((id) => !effects.has(`fault.effect/${id}`));
    const duplicated = ids.filter((id) => (effects.get(`fault.effect/${id}`) ?? 0) > 1);
    expect({ lost: lost.length, duplicated: duplicated.length, effects: await effectRows() }).toEqual({ lost: 0, duplicated: 0, effects: EVENTS });
    console.log(`fault test: ${KILLS} kill -9, ${EVENTS} events, ${doneAtLastKill} done before the last kill, ${Date.now() - started} ms`);
  }, 180_000);
});
