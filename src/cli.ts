#!/usr/bin/env node
import { pathToFileURL } from 'node:url';
import { ConfigError } from './platform/config.ts';
import { installSignalHandlers } from './platform/lifecycle.ts';
import { MigrationError } from './platform/migrate/migrator.ts';
import { openPlatform, startApi } from './main.ts';

const USAGE = `usage: plinth <command>
  start      run the API (and, in the embedded default, the worker) — applies migrations first
  worker     run the worker role only (jobs, outbox relay, schedules)
  migrate    apply pending migrations and exit
  bench      load benchmarks against baselines (plinth bench --help)`;

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
