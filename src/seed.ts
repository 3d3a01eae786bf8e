import { randomBytes } from 'node:crypto';
import { analyzeProjects, seedProjects, type SeedProgress } from './modules/projects/index.ts';
import type { Modules, Platform } from './main.ts';
import { newId } from './platform/ids.ts';

/** Every seeded owner signs in with this password (demo data only). */
export const SEED_PASSWORD = 'plinth seed password 1';

export interface SeedArgs {
  orgs: number;
  tasks: number;
  projectsPerOrg: number;
  batchSize: number;
}

const USAGE = 'usage: plinth seed --orgs N --tasks M [--projects P] [--batch B]';

/** Parses `--orgs N --tasks M [--projects P] [--batch B]`; throws a one-line usage error otherwise. */
export function parseSeedArgs(argv: string[]): SeedArgs {
  const values: Record<string, number> = { orgs: 10, tasks: 10_000, projects: 5, batch: 20_000 };
  for (let i = 0; i < argv.length; i += 2) {
    const name = argv[i]?.replace(/^--/, '');
    const raw = argv[i + 1];
    if (!name || !(name in values) || raw === undefined || !/^\d+$/.test(raw)) throw new Error(`${USAGE} (got "${argv.join(' ')}")`);
    values[name] = Number(raw);
  }
  if (values.orgs! < 1 || values.orgs! > 100_000) throw new Error(`--orgs must be 1..100000 (${USAGE})`);
  if (values.tasks! > 50_000_000) throw new Error(`--tasks must be at most 50000000 (${USAGE})`);
  if (values.projects! < 1 || values.projects! > 100) throw new Error(`--projects must be 1..100 (${USAGE})`);
  if (values.batch! < 100 || values.batch! > 100_000) throw new Error(`--batch must be 100..100000 (${USAGE})`);
  return { orgs: values.orgs!, tasks: values.tasks!, projectsPerOrg: values.projects!, batchSize: values.batch! };
}

/** `[#######.......]  45%  450000/1000000 tasks  12.3s  36585/s` on one terminal line. */
export function progressBar(done: number, total: number, elapsedMs: number, width = 30): string {
  const ratio = total === 0 ? 1 : Math.min(done / total, 1);
  const filled = Math.floor(ratio * width);
  const rate = elapsedMs > 0 ? Math.round((done * 1000) / elapsedMs) : 0;
  return `[${'#'.repeat(filled)}${'.'.repeat(width - filled)}] ${String(Math.round(ratio * 100)).padStart(3)}%  ${done}/${total} tasks  ${(elapsedMs / 1000).toFixed(1)}s  ${rate}/s`;
}

/** Real orgs through tenancy's signup (user + org + owner membership + audit), so the data is usable over HTTP. */
async function createSeedOrgs(tenancy: Pick<Modules['tenancy'], 'signup'>, count: number, out: NodeJS.WriteStream) {
  const run = randomBytes(3).toString('hex');
  const orgs: Array<{ id: string; email: string; memberIds: string[] }> = [];
  for (let i = 1; i <= count; i++) {
    const email = `seed-${run}-${i}@example.com`;
    const r = await tenancy.signup(
      { email, password: SEED_PASSWORD, name: `Seed Owner ${i}`, organizationName: `Seed Org ${i}` },
      { ip: '127.0.0.1', userAgent: 'plinth seed', requestId: newId() },
    );
    orgs.push({ id: r.organization.id, email, memberIds: [r.user.id] });
    out.write(out.isTTY ? `\rorgs ${i}/${count}` : i === count ? `orgs ${i}/${count}\n` : '');
  }
  if (out.isTTY) out.write('\n');
  return orgs;
}

/**
 * `plinth seed`: realistic bulk data for benchmarks: N orgs (each with an owner who can log in with
 * SEED_PASSWORD), P projects per org, M tasks in total, spread evenly.
 */
export async function runSeed(platform: Platform, modules: Pick<Modules, 'tenancy'>, args: SeedArgs, out: NodeJS.WriteStream = process.stderr) {
  const orgs = await createSeedOrgs(modules.tenancy, args.orgs, out);
  const started = Date.now();
  let last = 0;
  const draw = (p: SeedProgress) => {
    const now = Date.now();
    if (p.tasksDone < p.tasksTotal && now - last < 200) return;
    last = now;
    const line = progressBar(p.tasksDone, p.tasksTotal, now - started);
    out.write(out.isTTY ? `\r${line}` : `${line}\n`);
  };
  draw({ tenantIndex: 0, tasksDone: 0, tasksTotal: args.tasks });
  const result = await seedProjects(platform.db.owner, {
    orgs,
    tasks: args.tasks,
    projectsPerOrg: args.projectsPerOrg,
    batchSize: args.batchSize,
    onProgress: draw,
  });
  if (out.isTTY) out.write('\n');
  // Fresh statistics, so the planner picks the list indexes at once (autovacuum would get there later).
  await analyzeProjects(platform.db.owner);
  const ms = Date.now() - started;
  return { ...result, orgs, ms };
}
