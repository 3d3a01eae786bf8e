import { defineConfig } from 'vitest/config';
import { LongestFirstSequencer } from './test/helpers/sequencer.ts';

/**
 * Test files that assert process-global state: the OpenTelemetry API globals (a tracer provider can be
 * registered once per process) and absolute values in the prom-client default registry. They get a fresh
 * worker each; every other file shares its worker process with the files before it.
 */
const ISOLATED = [
  'src/platform/observability/metrics.test.ts',
  'src/platform/observability/tracing.test.ts',
  'src/platform/observability/trace-outbox.test.ts',
];

/**
 * Tests that start real `plinth` processes, run the project's own tools (tsc, dependency-cruiser, the OpenAPI
 * linter, the schema generator on a freshly migrated database) over the whole tree, or need a data volume
 * PGlite builds slowly. They take most of the
 * suite's time and check what `npm run typecheck` / `npm run lint` and the services run also cover, so the
 * quick `npm test` on a fresh machine leaves them out; they run whenever `TEST_DATABASE_URL` is set (CI's second
 * run) or with `PLINTH_TEST_ALL=1`.
 */
const PROCESS_AND_TOOLING = [
  'src/platform/db/schema-types.test.ts',
  'test/boundaries.test.ts',
  'src/platform/lifecycle.test.ts',
  'src/platform/outbox/worker-lifecycle.test.ts',
  'test/deploy/cli-start.test.ts',
  'src/platform/observability/tracing-cli.test.ts',
  'test/openapi-lint.test.ts',
  'test/architecture-diagram.test.ts',
  // Seeds 120,000 tasks to EXPLAIN every list query: ~35 s on PGlite (WASM), ~3 s on Postgres, and the
  // plans that matter are production Postgres's.
  'src/modules/projects/projects.explain.test.ts',
];
const RUN_ALL = Boolean(process.env.TEST_DATABASE_URL || process.env.PLINTH_TEST_ALL);

export default defineConfig({
  test: {
    exclude: ['test/fixtures/**', 'node_modules/**'],
    // Migrates the template database every test file copies, once per run (see createTestDatabase).
    globalSetup: ['test/helpers/global-setup.ts'],
    // argon2id at a test cost (identity.passwords.ts): honoured only with NODE_ENV=test, which vitest sets.
    env: { PLINTH_TEST_FAST_PASSWORD_HASH: '1' },
    testTimeout: 60_000,
    hookTimeout: 120_000,
    reporters: ['default'],
    sequence: { sequencer: LongestFirstSequencer },
    poolOptions: {
      // Not isolated: a worker process runs file after file with its module cache and compiled PGlite WASM
      // kept, instead of a new process re-importing Fastify, Kysely, … and recompiling the WASM per file
      // (that was about a third of the suite's CPU time). Files still get their own database and app.
      // Two cores: two long-lived workers (a third only added CPU contention). min = max: the pool ends idle
      // workers above the minimum, and with min < max runs were seen to abort ("Terminating worker thread").
      forks: { isolate: false, maxForks: 2, minForks: 2 },
      // The few ISOLATED files, beside the forks (they are short, and mostly wait).
      threads: { isolate: true, maxThreads: 1, minThreads: 1 },
    },
    projects: [
      {
        extends: true,
        test: {
          name: 'shared',
          pool: 'forks',
          include: ['src/**/*.test.ts', 'test/**/*.test.ts', 'migrations/**/*.test.ts', 'bench/**/*.test.ts'],
          exclude: ['test/fixtures/**', 'node_modules/**', ...ISOLATED, ...(RUN_ALL ? [] : PROCESS_AND_TOOLING)],
        },
      },
      { extends: true, test: { name: 'isolated', pool: 'threads', include: ISOLATED } },
    ],
  },
});
