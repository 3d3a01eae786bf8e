/**
 * The per-project ceiling of gap-free task numbers, measured below HTTP:
 *
 *   npx tsx bench/lib/number-ceiling.ts [--duration SEC] [--workers N]
 *
 * Runs the projects module's real `createTask` (the same use case the API runs, over a `pg` pool of 10 on
 * a throwaway database of the local Postgres) from N concurrent workers for SEC seconds each, on one
 * project vs spread over 50 projects of the same org, plain transaction vs a request's unit of work (as
 * with an Idempotency-Key: the response is recorded by one more statement before COMMIT). With the
 * audit record switched off the org-wide audit chain lock does not apply, so "one project" vs "50
 * projects" isolates what the project row lock costs; a row with the real audit shows today's end to end.
 * Prints creates/s per row and checks every project's numbers are 1..N afterwards.
 */
import { sql } from 'kysely';
import { pathToFileURL } from 'node:url';
import type { TenantCache } from '../../src/platform/cache/cache.ts';
import { runWithUnitOfWorkSlot, setUnitOfWork } from '../../src/platform/db/unit-of-work.ts';
import type { TenantActorContext } from '../../src/platform/http/actor.ts';
import { newId } from '../../src/platform/ids.ts';
import { addToOutbox } from '../../src/platform/outbox/publisher.ts';
import { createTestDatabase } from '../../src/platform/testing/test-db.ts';
import { createAudit, type Audit } from '../../src/modules/audit/index.ts';
import { allowEverything, createProjects } from '../../src/modules/projects/index.ts';
import { DEFAULT_PG } from './env.ts';
import { round } from './stats.ts';

export interface CeilingRow {
  audit: 'off' | 'on';
  projects: number;
  wrap: 'transaction' | 'unit of work';
  createsPerSec: number;
  failed: number;
}

/** createTask needs no cache; the use-case context only asks for the namespaces. */
const noCache = {
  namespace: <T>(): TenantCache<T> => ({ get: (_t, _k, load) => load(), peek: () => undefined, invalidate: async () => true }),
};

export async function measureNumberCeiling(opts: { durationSec: number; workers: number; log?: (m: string) => void }): Promise<CeilingRow[]> {
  process.env.TEST_DATABASE_URL ??= DEFAULT_PG;
  const tdb = await createTestDatabase({ poolMax: 10 });
  const { db } = tdb;
  const rows: CeilingRow[] = [];
  try {
    const realAudit = createAudit({ db });
    // Not a literal in place: the record's result type differs between audit designs (chained or sequenced later).
    const nothing = { id: '', seq: 0, hash: '' };
    const noAudit: Audit = { ...realAudit, record: async () => nothing };
    const build = (audit: Audit) =>
      createProjects({ db, events: { add: addToOutbox }, audit, cache: noCache, isMember: async () => true, entitlements: allowEverything });
    const orgId = newId();
    const userId = newId();
    const ctx: TenantActorContext = { tenantId: orgId, actor: { type: 'user', id: userId, userId }, requestId: null, ip: null };
    const setup = build(noAudit);
    const allProjects: string[] = [];
    const plan: Array<Omit<CeilingRow, 'createsPerSec' | 'failed'>> = [
      { audit: 'off', projects: 1, wrap: 'transaction' },
      { audit: 'off', projects: 50, wrap: 'transaction' },
      { audit: 'off', projects: 1, wrap: 'unit of work' },
      { audit: 'off', projects: 50, wrap: 'unit of work' },
      { audit: 'on', projects: 1, wrap: 'unit of work' },
      { audit: 'on', projects: 50, wrap: 'unit of work' },
    ];
    for (const [i, p] of plan.entries()) {
      const projects: string[] = [];
      for (let j = 0; j < p.projects; j++) projects.push((await setup.createProject(ctx, { key: `C${i}X${j}`, name: `ceiling ${i}.${j}` })).id);
      allProjects.push(...projects);
      const service = build(p.audit === 'on' ? realAudit : noAudit);
      const once = async (n: number) => {
        const projectId = projects[n % projects.length]!;
        if (p.wrap === 'transaction') return service.createTask(ctx, projectId, { title: `ceiling ${n}` });
        return runWithUnitOfWorkSlot(async () => {
          // As the idempotency layer does: a fence statement at BEGIN, the response recorded with the COMMIT.
          const uow = db.openUnitOfWork(async (trx) => void (await sql`select 1`.execute(trx)));
          setUnitOfWork(uow);
          try {
            const task = await service.createTask(ctx, projectId, { title: `ceiling ${n}` });
            const body = JSON.stringify(task);
            await uow.commit(sql`select ${body.length}`.compile(db.app));
          } catch (err) {
            await uow.rollback();
            throw err;
          }
        });
      };
      let done = 0;
      let failed = 0;
      let n = 0;
      const deadline = performance.now() + opts.durationSec * 1000;
      const started = performance.now();
      await Promise.all(
        Array.from({ length: opts.workers }, async () => {
          while (performance.now() < deadline) {
            try {
              await once(n++);
              done++;
            } catch {
              failed++;
            }
          }
        }),
      );
      const row = { ...p, createsPerSec: round(done / ((performance.now() - started) / 1000), 0), failed };
      opts.log?.(`audit ${row.audit}, ${row.projects} project(s), ${row.wrap}: ${row.createsPerSec} creates/s${failed ? ` (${failed} failed)` : ''}`);
      rows.push(row);
    }
    const broken = await db.withTenant(orgId, (trx) =>
      trx
        .selectFrom('tasks')
        .select(['project_id', (eb) => eb.fn.countAll<number>().as('n'), (eb) => eb.fn.max('number').as('top')])
        .groupBy('project_id')
        .execute(),
    );
    for (const b of broken) {
      if (Number(b.n) !== Number(b.top)) throw new Error(`project ${b.project_id}: ${b.n} tasks but the top number is ${b.top} (a gap)`);
    }
    opts.log?.(`numbers checked: ${broken.length} projects, each 1..N without a gap`);
  } finally {
    await tdb.drop();
  }
  return rows;
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const arg = (name: string, dflt: number) => {
    const i = process.argv.indexOf(name);
    return i > 0 ? Number(process.argv[i + 1]) : dflt;
  };
  measureNumberCeiling({ durationSec: arg('--duration', 3), workers: arg('--workers', 20), log: (m) => console.error(m) }).then(
    (rows) => {
      console.table(rows);
      process.exit(0);
    },
    (err) => {
      console.error(err);
      process.exit(1);
    },
  );
}
