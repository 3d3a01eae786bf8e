#!/usr/bin/env node
import { pathToFileURL } from 'node:url';
import v8 from 'node:v8';
import type { QueryExecutorProvider } from 'kysely';
import { ConfigError } from './platform/config.ts';
// Not database.ts: that loads pg, which tracing must patch first (see loadMain).
import { describeConnectError } from './platform/db/unavailable.ts';
import { isUuid } from './platform/ids.ts';
import { installSignalHandlers } from './platform/lifecycle.ts';
import { yieldCpu } from './platform/cpu-priority.ts';
import { MigrationError } from './platform/migrate/migrator.ts';
import type { Platform } from './main.ts';
import { registerTracing } from './platform/observability/tracing-config.ts';

/**
 * Tracing must patch http/fastify/pg/ioredis before they are loaded, so it starts first (a no-op unless
 * OTEL_* asks for it) and the composition root, which imports them, is loaded only afterwards. That is
 * why every command below imports what it needs dynamically.
 */
async function loadMain() {
  await registerTracing();
  return import('./main.ts');
}

/**
 * V8's heap sizing, applied before anything allocates much. Unbounded, V8 lets the old space grow to about four
 * times the live heap between major GCs: the API held ~380 MB of RSS for ~70 MB of live data. Growing it by 30 %
 * of what survived the last major GC held it at ~200–225 MB with no measurable CPU cost per cached read
 * (docs/production.md "Heap size"). Node refuses this flag in NODE_OPTIONS, hence here. Flags that size the
 * heap at startup (e.g. `--max-semi-space-size`) do nothing here: they belong in NODE_OPTIONS. PLINTH_V8_FLAGS
 * replaces the default; set it empty for V8's own sizing.
 */
export const DEFAULT_V8_FLAGS = '--heap-growing-percent=30';
const v8Flags = process.env.PLINTH_V8_FLAGS ?? DEFAULT_V8_FLAGS;
if (v8Flags.trim()) v8.setFlagsFromString(v8Flags);

const USAGE = `usage: plinth <command>
  start      run the API (and, in the embedded default, the worker) — applies migrations first
  worker     run the worker role only (jobs, outbox relay, schedules)
  migrate [--set-app-password]   apply pending migrations and exit (and set the app role's password)
  migrate --check [--wait=SECONDS]   exit 0 when the schema matches this release (waiting for the migration job)
  db set-app-password          give plinth_app the password read from stdin, or else from DATABASE_APP_URL
  backup [--out FILE]          logical backup of DATABASE_URL with pg_dump (custom format; docs/production.md)
  db citus-plan                print the SQL that distributes the tenant tables on a Citus cluster (docs/production.md)
  admin grant|revoke <email>   make a user a platform administrator (or stop)
  audit verify [orgId]         recompute the audit hash chains (sequenced part), report the backlog; exit 1 if tampered
  audit sequence [orgId]       sequence pending audit events now (the worker does it every second)
  reports rebuild [--org ID]   recompute the report read models from the source tables; prints the drift found
  billing verify [--org ID [--invoice ID]]   recompute finalized invoices from the usage ledger and prices; exit 1 on any mismatch
  jobs dead                    list dead-lettered jobs (JSON lines)
  jobs redrive <id>            send a dead job back for processing
  seed --orgs N --tasks M [--projects P] [--batch B]   bulk demo data, with a progress bar
  bench [--scenario NAME]      load benchmarks against baselines (plinth bench --help)`;

async function run(argv: string[]): Promise<number> {
  const [command] = argv;
  switch (command) {
    case 'start': {
      const { compose, startApi } = await loadMain();
      const { startWorker } = await import('./worker.ts');
      const { platform, modules } = await compose();
      const app = await startApi(platform, modules);
      // Embedded default: one process runs both roles. PLINTH_ROLE=api runs only the API.
      if (platform.config.role !== 'api') await startWorker(platform, modules);
      installSignalHandlers(platform.lifecycle, platform.logger);
      const address = app.server.address();
      const port = typeof address === 'object' && address ? address.port : platform.config.port;
      const base = `http://${platform.config.host}:${port}`;
      platform.logger.info({ url: base, docs: `${base}/docs`, database: platform.db.kind }, 'Plinth is listening');
      if (process.stdout.isTTY) console.log(`\n  Plinth API  ${base}\n  API docs    ${base}/docs\n`);
      return -1; // keep running until a signal
    }
    case 'worker': {
      const { compose } = await loadMain();
      const { startWorker } = await import('./worker.ts');
      const { startMetricsListener } = await import('./platform/observability/metrics-server.ts');
      const { platform, modules } = await compose();
      yieldCpu(platform.config.workerNice, platform.logger);
      await startWorker(platform, modules);
      // No API listener in this role: Prometheus scrapes job/outbox metrics here when METRICS_PORT is set.
      await startMetricsListener(platform);
      installSignalHandlers(platform.lifecycle, platform.logger);
      platform.logger.info({ workerId: platform.events.workerId, database: platform.db.kind }, 'Plinth worker is running');
      return -1;
    }
    case 'jobs':
      return jobsCommand(argv.slice(1));
    case 'migrate': {
      if (argv.includes('--check')) return migrateCheck(argv);
      const { openPlatform } = await loadMain();
      const platform = await openPlatform({ migrate: true });
      if (argv.includes('--set-app-password')) await setAppPasswordFrom(platform.config.databaseAppUrl, platform.db.owner);
      const code = await platform.lifecycle.shutdown('migrations done');
      return code;
    }
    case 'backup':
      return backup(argv.slice(1));
    case 'db':
      if (argv[1] === 'citus-plan') return dbCitusPlan();
      if (argv[1] !== 'set-app-password') {
        console.error('usage: plinth db set-app-password|citus-plan');
        return 2;
      }
      return dbSetAppPassword();
    case 'bench': {
      // A dev tool (autocannon, baselines), loaded on demand. The specifier is not a literal so the compiled
      // build leaves bench/ out; from dist/ it is not there.
      if (import.meta.url.endsWith('.js')) {
        console.error('plinth bench runs from a source checkout: npm run bench');
        return 2;
      }
      const benchEntry = '../bench/run.ts';
      const { runBench } = (await import(benchEntry)) as { runBench(argv: string[]): Promise<number> };
      return runBench(argv.slice(1));
    }
    case 'seed': {
      const { compose } = await loadMain();
      const { parseSeedArgs, runSeed, SEED_PASSWORD } = await import('./seed.ts');
      const args = parseSeedArgs(argv.slice(1));
      const { platform, modules } = await compose({ migrate: true });
      const r = await runSeed(platform, modules, args);
      console.log(`seeded ${r.orgs.length} orgs, ${r.projects} projects, ${r.tasks} tasks in ${(r.ms / 1000).toFixed(1)}s`);
      console.log(`log in as ${r.orgs[0]?.email} … ${r.orgs.at(-1)?.email} with password "${SEED_PASSWORD}"`);
      return platform.lifecycle.shutdown('seed done');
    }
    case 'admin':
    case 'billing':
    case 'reports':
    case 'audit': {
      const { compose } = await loadMain();
      const { platform, modules } = await compose();
      try {
        if (command === 'admin') {
          const { runAdminCommand } = await import('./modules/identity/index.ts');
          return await runAdminCommand(modules.identity, argv.slice(1));
        }
        if (command === 'billing') {
          const { runBillingCommand } = await import('./modules/billing/index.ts');
          return await runBillingCommand(modules.billing, argv.slice(1));
        }
        if (command === 'reports') {
          const { runReportsCommand } = await import('./modules/reporting/index.ts');
          return await runReportsCommand(modules.reporting, argv.slice(1));
        }
        const { runAuditCommand } = await import('./modules/audit/index.ts');
        return await runAuditCommand(modules.audit, argv.slice(1));
      } finally {
        await platform.lifecycle.shutdown(`${command} done`);
      }
    }
    case undefined:
    case 'help':
    case '--help':
      console.log(USAGE);
      return 0;
    default:
      console.error(`unknown command "${command}"\n${USAGE}`);
      return 2;
  }
}

async function jobsCommand(args: string[]): Promise<number> {
  const [sub, id] = args;
  if (sub !== 'dead' && sub !== 'redrive') {
    console.error(`usage: plinth jobs dead | plinth jobs redrive <id>`);
    return 2;
  }
  if (sub === 'redrive' && (!id || !isUuid(id))) {
    console.error('plinth jobs redrive needs the id of a dead job (a UUID; see plinth jobs dead)');
    return 2;
  }
  const { openPlatform } = await loadMain();
  const platform = await openPlatform();
  try {
    return await runJobsCommand(platform, sub, id);
  } finally {
    await platform.lifecycle.shutdown(`jobs ${sub} done`);
  }
}

/** `plinth jobs …` on an open platform (exported for tests). Output: JSON lines on stdout. */
export async function runJobsCommand(
  platform: Platform,
  sub: 'dead' | 'redrive',
  id?: string,
  out: Pick<Console, 'log' | 'error'> = console,
): Promise<number> {
  return sub === 'dead' ? listDead(platform, out) : redrive(platform, id!, out);
}

async function listDead(platform: Platform, out: Pick<Console, 'log' | 'error'>): Promise<number> {
  let after: string | undefined;
  let count = 0;
  do {
    const page = await platform.events.listDead({ limit: 200, after });
    for (const job of page.data) out.log(JSON.stringify(job));
    count += page.data.length;
    after = page.nextCursor ?? undefined;
  } while (after);
  out.error(`${count} dead job(s)`);
  return 0;
}

async function redrive(platform: Platform, id: string, out: Pick<Console, 'log' | 'error'>): Promise<number> {
  try {
    const job = await platform.events.redrive(id);
    out.log(JSON.stringify({ ...job, status: 'pending' }));
    return 0;
  } catch (err) {
    const { AppError } = await import('./platform/http/errors.ts');
    if (err instanceof AppError) {
      out.error(`${err.code}: ${err.detail}`);
      return 1;
    }
    throw err;
  }
}

/**
 * `plinth migrate --check [--wait=S]`: changes nothing; exits 0 once the database has exactly this release's
 * migrations (plus expand steps of a newer one). A Kubernetes init container runs it so pods of a new release
 * wait for the migration Job instead of crash-looping on a pending migration.
 */
async function migrateCheck(argv: string[]): Promise<number> {
  const waitArg = argv.find((a) => a.startsWith('--wait='));
  const waitS = waitArg ? Number(waitArg.slice('--wait='.length)) : 0;
  if (!Number.isFinite(waitS) || waitS < 0) {
    console.error('--wait takes a number of seconds');
    return 2;
  }
  const { loadConfig } = await import('./platform/config.ts');
  const { openDatabase } = await import('./platform/db/database.ts');
  const { checkMigrations } = await import('./platform/migrate/migrator.ts');
  const config = loadConfig(process.env);
  const db = await openDatabase({ databaseUrl: config.databaseUrl, dataDir: config.databaseUrl ? undefined : `${config.dataDir}/pgdata` });
  const deadline = Date.now() + waitS * 1000;
  try {
    for (;;) {
      try {
        const { newer } = await checkMigrations(db.owner);
        console.error(`schema matches this release${newer.length ? ` (and expand steps of a newer one: ${newer.join(', ')})` : ''}`);
        return 0;
      } catch (err) {
        // Still waiting for the migration job (or for Postgres): pending, none applied yet, unreachable.
        const waiting = (err instanceof MigrationError && /^(Pending|The database has no)/.test(err.message)) || describeConnectError(err) !== undefined;
        if (!waiting || Date.now() >= deadline) throw err;
        await new Promise((r) => setTimeout(r, 2_000));
      }
    }
  } finally {
    await db.close();
  }
}

/**
 * The app role's password, set by the owner: from stdin when piped (`… | plinth db set-app-password`),
 * else the password in DATABASE_APP_URL (so one secret is both the app's login and the role's password).
 */
async function dbSetAppPassword(): Promise<number> {
  const { loadConfig } = await import('./platform/config.ts');
  const { openDatabase } = await import('./platform/db/database.ts');
  const config = loadConfig(process.env);
  if (!config.databaseUrl) {
    console.error('plinth db set-app-password needs DATABASE_URL (the owner login; the embedded database has no logins)');
    return 2;
  }
  const db = await openDatabase({ databaseUrl: config.databaseUrl });
  try {
    const stdin = process.stdin.isTTY ? undefined : (await readStdin()).trim();
    await setAppPasswordFrom(config.databaseAppUrl, db.owner, stdin || undefined);
    return 0;
  } finally {
    await db.close();
  }
}

async function setAppPasswordFrom(appUrl: string | undefined, owner: QueryExecutorProvider, explicit?: string): Promise<void> {
  const { APP_ROLE } = await import('./platform/db/database.ts');
  const { setAppPassword } = await import('./platform/db/app-role.ts');
  const { DatabaseConnectError } = await import('./platform/db/unavailable.ts');
  const password = explicit ?? (appUrl ? decodeURIComponent(new URL(appUrl).password) : '');
  if (!password) throw new DatabaseConnectError('No password: pipe one on stdin or set DATABASE_APP_URL with a password');
  if (password.length < 16) throw new DatabaseConnectError('The plinth_app password must be at least 16 characters');
  await setAppPassword(owner, password);
  console.error(`password of ${APP_ROLE} set`);
}

async function readStdin(): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}

export async function runCli(argv: string[]): Promise<void> {
  try {
    const code = await run(argv);
    if (code >= 0) process.exit(code);
  } catch (err) {
    if (err instanceof ConfigError || err instanceof MigrationError) {
      console.error(err.message);
      process.exit(1);
    }
    // Postgres unreachable or the login refused: one line, not a stack trace.
    const line = describeConnectError(err);
    if (line) {
      console.error(line);
      process.exit(1);
    }
    console.error(err);
    process.exit(1);
  }
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) void runCli(process.argv.slice(2));

/** Checks the connected schema against the placement rules, then prints the Citus placement statements. */
async function dbCitusPlan(): Promise<number> {
  const { openPlatform } = await loadMain();
  const { readTableShapes, foreignKeysOf, placementViolations } = await import('./platform/db/catalog.ts');
  const { citusDistributionSql, TABLE_PLACEMENT } = await import('./platform/db/distribution.ts');
  const platform = await openPlatform({ migrate: false });
  try {
    const shapes = await readTableShapes(platform.db.owner);
    const violations = placementViolations(shapes, TABLE_PLACEMENT);
    if (violations.length > 0) {
      console.error(`the schema breaks the co-location rules:\n  ${violations.join('\n  ')}`);
      return 1;
    }
    console.log(citusDistributionSql(foreignKeysOf(shapes)).join('\n'));
    return 0;
  } finally {
    await platform.lifecycle.shutdown('citus plan printed');
  }
}

/**
 * A logical backup: pg_dump of the configured database in custom format (restore with pg_restore, see
 * docs/production.md). Roles are cluster-wide and not in it: `plinth migrate` re-creates plinth_app.
 */
async function backup(args: string[]): Promise<number> {
  const url = process.env.DATABASE_URL;
  if (!url) {
    console.error('plinth backup needs DATABASE_URL (the embedded database: copy the ./.plinth data directory while stopped)');
    return 2;
  }
  const i = args.indexOf('--out');
  const out = i >= 0 ? args[i + 1] : `plinth-${new Date().toISOString().replace(/[:.]/g, '-')}.dump`;
  if (!out) {
    console.error('usage: plinth backup [--out FILE]');
    return 2;
  }
  const { spawnSync } = await import('node:child_process');
  const started = Date.now();
  const res = spawnSync('pg_dump', ['--format=custom', '--file', out, '--dbname', url], { stdio: ['ignore', 'inherit', 'inherit'] });
  if (res.error || res.status !== 0) {
    console.error(`pg_dump failed${res.error ? `: ${res.error.message}` : ` with exit code ${res.status}`}`);
    return 1;
  }
  console.log(`wrote ${out} in ${((Date.now() - started) / 1000).toFixed(1)} s`);
  return 0;
}
