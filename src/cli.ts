#!/usr/bin/env node
import { pathToFileURL } from 'node:url';
import { ConfigError } from './platform/config.ts';
import { installSignalHandlers } from './platform/lifecycle.ts';
import { MigrationError } from './platform/migrate/migrator.ts';
import { openPlatform, startApi } from './main.ts';
import { parseSeedArgs, runSeed, SEED_PASSWORD } from './seed.ts';
import { runAuditCommand } from './modules/audit/index.ts';
import { runAdminCommand } from './modules/identity/index.ts';

const USAGE = `usage: plinth <command>
  start      run the API (and, in the embedded default, the worker) — applies migrations first
  worker     run the worker role only (jobs, outbox relay, schedules)
  migrate    apply pending migrations and exit
  admin grant|revoke <email>   make a user a platform administrator (or stop)
  audit verify [orgId]         recompute the audit hash chains; exit 1 if any was tampered with
  seed --orgs N --tasks M [--projects P] [--batch B]   bulk demo data, with a progress bar
  bench [--scenario NAME]   load benchmarks against baselines (plinth bench --help)`;

async function run(argv: string[]): Promise<number> {
  const [command] = argv;
  switch (command) {
    case 'start': {
      const platform = await openPlatform();
      const app = await startApi(platform);
      installSignalHandlers(platform.lifecycle, platform.logger);
      const address = app.server.address();
      const port = typeof address === 'object' && address ? address.port : platform.config.port;
      const base = `http://${platform.config.host}:${port}`;
      platform.logger.info({ url: base, docs: `${base}/docs`, database: platform.db.kind }, 'Plinth is listening');
      if (process.stdout.isTTY) console.log(`\n  Plinth API  ${base}\n  API docs    ${base}/docs\n`);
      return -1; // keep running until a signal
    }
    case 'migrate': {
      const platform = await openPlatform(process.env, { migrate: true });
      const code = await platform.lifecycle.shutdown('migrations done');
      return code;
    }
    case 'bench': {
      // Loaded on demand: the harness (autocannon, baselines) is a dev tool, not part of the API process.
      const { runBench } = await import('../bench/run.ts');
      return runBench(argv.slice(1));
    }
    case 'seed': {
      const args = parseSeedArgs(argv.slice(1));
      const platform = await openPlatform(process.env, { migrate: true });
      const r = await runSeed(platform, args);
      console.log(`seeded ${r.orgs.length} orgs, ${r.projects} projects, ${r.tasks} tasks in ${(r.ms / 1000).toFixed(1)}s`);
      console.log(`log in as ${r.orgs[0]?.email} … ${r.orgs.at(-1)?.email} with password "${SEED_PASSWORD}"`);
      return platform.lifecycle.shutdown('seed done');
    }
    case 'admin':
    case 'audit': {
      const platform = await openPlatform();
      try {
        return command === 'admin' ? await runAdminCommand(platform, argv.slice(1)) : await runAuditCommand(platform, argv.slice(1));
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

export async function runCli(argv: string[]): Promise<void> {
  try {
    const code = await run(argv);
    if (code >= 0) process.exit(code);
  } catch (err) {
    if (err instanceof ConfigError || err instanceof MigrationError) {
      console.error(err.message);
      process.exit(1);
    }
    console.error(err);
    process.exit(1);
  }
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) void runCli(process.argv.slice(2));
