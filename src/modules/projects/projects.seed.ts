import type { Kysely } from 'kysely';
import type { DB } from '../../platform/db/database.ts';
import { newId } from '../../platform/ids.ts';
import { analyzeProjects as analyze, insertSeedProjects, insertTaskBatch, inTenant, ownerScope, seedProjectCounters, setTaskCounter, textArray } from './seed.repo.ts';

/** ANALYZE of projects and tasks after a bulk load (as the owner), so the planner picks the list indexes at once. */
export async function analyzeProjects(owner: Kysely<DB>): Promise<void> {
  await analyze(ownerScope(owner));
}

export interface SeedProgress {
  tenantIndex: number;
  tasksDone: number;
  tasksTotal: number;
}

export interface SeedOptions {
  /** Orgs to fill (their ids); each gets `projectsPerOrg` projects and an equal share of tasks. */
  orgs: Array<{ id: string; memberIds: string[] }>;
  tasks: number;
  projectsPerOrg?: number;
  /** Rows per INSERT … SELECT generate_series statement (one transaction each). */
  batchSize?: number;
  onProgress?: (p: SeedProgress) => void;
}

/**
 * Bulk-generates realistic projects and tasks as the owner (`db.owner`), inside each org's tenant context,
 * with INSERT … SELECT over generate_series (no per-row round trips). Task numbers are gap-free per project
 * and each project's counter is left at its last number, so the API continues the sequence.
 */
export async function seedProjects(ownerDb: Kysely<DB>, opts: SeedOptions): Promise<{ projects: number; tasks: number }> {
  const owner = ownerScope(ownerDb);
  const projectsPerOrg = opts.projectsPerOrg ?? 5;
  const batchSize = opts.batchSize ?? 20_000;
  const perOrg = Math.floor(opts.tasks / Math.max(opts.orgs.length, 1));
  let done = 0;
  let projects = 0;
  for (const [tenantIndex, org] of opts.orgs.entries()) {
    const orgTasks = tenantIndex === opts.orgs.length - 1 ? opts.tasks - perOrg * (opts.orgs.length - 1) : perOrg;
    const creator = org.memberIds[0] ?? newId();
    const wanted = Array.from({ length: projectsPerOrg }, (_, p) => ({ id: newId(), key: `P${String(p + 1).padStart(2, '0')}`, name: `Project ${p + 1}` }));
    await inTenant(owner, org.id, (trx) => insertSeedProjects(trx, org.id, wanted, creator));
    // Existing projects with the same key keep theirs: continue their numbering instead.
    const rows = await inTenant(owner, org.id, (trx) => seedProjectCounters(trx, org.id, projectsPerOrg));
    projects += rows.length;
    const counters = new Map(rows.map((r) => [r.id, r.counter]));
    const members = textArray(org.memberIds);
    for (const [p, row] of rows.entries()) {
      const share = Math.floor(orgTasks / rows.length) + (p < orgTasks % rows.length ? 1 : 0);
      for (let offset = 0; offset < share; offset += batchSize) {
        const n = Math.min(batchSize, share - offset);
        const start = counters.get(row.id)!;
        await inTenant(owner, org.id, async (trx) => {
          await insertTaskBatch(trx, { tenantId: org.id, projectId: row.id, start, count: n, members, creator });
          await setTaskCounter(trx, org.id, row.id, start + n);
        });
        counters.set(row.id, start + n);
        done += n;
        opts.onProgress?.({ tenantIndex, tasksDone: done, tasksTotal: opts.tasks });
      }
    }
  }
  return { projects, tasks: done };
}
