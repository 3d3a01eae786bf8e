import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['src/**/*.test.ts', 'test/**/*.test.ts', 'migrations/**/*.test.ts', 'bench/**/*.test.ts'],
    exclude: ['test/fixtures/**', 'node_modules/**'],
    // Migrates the template database every test file copies, once per run (see createTestDatabase).
    globalSetup: ['test/helpers/global-setup.ts'],
    // PGlite boots a WASM Postgres per test file; two cores give little room for more parallel forks.
    pool: 'forks',
    poolOptions: { forks: { maxForks: 2, minForks: 1 } },
    testTimeout: 60_000,
    hookTimeout: 120_000,
    reporters: ['default'],
  },
});
