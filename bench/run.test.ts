import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { apiCommand, ensureCompiledBuild } from './lib/build.ts';
import { parseBenchArgs, SCENARIOS } from './run.ts';

describe('bench arguments', () => {
  it('defaults to every scenario with short durations', () => {
    const o = parseBenchArgs([]);
    expect(o).toMatchObject({ scenarios: [], durationSec: 5, connections: 50, large: false, baselines: true, api: 'dist', build: true });
  });

  it("runs production's topology (API and worker processes) unless --single-process", () => {
    expect(parseBenchArgs([])).toMatchObject({ worker: true });
    expect(parseBenchArgs(['--single-process'])).toMatchObject({ worker: false });
    expect(parseBenchArgs(['--worker'])).toMatchObject({ worker: true });
  });

  it('runs the compiled API by default; --api tsx runs the sources, --no-build reuses dist/', () => {
    expect(parseBenchArgs(['--api', 'tsx', '--no-build'])).toMatchObject({ api: 'tsx', build: false });
    expect(() => parseBenchArgs(['--api', 'ts-node'])).toThrow(/--api must be dist or tsx/);
    expect(apiCommand('dist')).toEqual({ runtime: 'node', args: ['dist/src/cli.js', 'start'] });
    expect(apiCommand('tsx')).toEqual({ runtime: 'tsx', args: ['src/cli.ts', 'start'] });
  });

  it('the three create shapes of P3 and the cold start are scenarios', () => {
    expect(SCENARIOS.map((s) => s.name)).toEqual(expect.arrayContaining(['create', 'create-hot', 'create-one-org', 'cold-start']));
  });

  it('--no-build fails clearly when dist/ is missing or older than the sources', async () => {
    const root = fs.mkdtempSync(path.join(os.tmpdir(), 'bench-build-'));
    try {
      fs.mkdirSync(path.join(root, 'src'), { recursive: true });
      fs.mkdirSync(path.join(root, 'migrations'));
      await expect(ensureCompiledBuild({ build: false, root })).rejects.toThrow(/dist\/src\/cli.js does not exist; run `npm run build`/);
      fs.mkdirSync(path.join(root, 'dist/src'), { recursive: true });
      fs.writeFileSync(path.join(root, 'dist/src/cli.js'), '');
      fs.utimesSync(path.join(root, 'dist/src/cli.js'), new Date(1_000_000), new Date(1_000_000));
      fs.writeFileSync(path.join(root, 'src/cli.ts'), '');
      await expect(ensureCompiledBuild({ build: false, root })).rejects.toThrow(/dist\/ is older than the sources/);
      fs.utimesSync(path.join(root, 'dist/src/cli.js'), new Date(), new Date(Date.now() + 60_000));
      await expect(ensureCompiledBuild({ build: false, root })).resolves.toEqual({});
      // a build that fails says so, and that the bench runs the compiled API (no scripts/build.mjs here)
      await expect(ensureCompiledBuild({ build: true, root })).rejects.toThrow(/npm run build failed — the bench runs the compiled API from dist\//);
    } finally {
      fs.rmSync(root, { recursive: true, force: true });
    }
  });

  it('selects scenarios by name, comma-separated or repeated, and passes API settings through', () => {
    const o = parseBenchArgs(['--scenario', 'cached-read,burst', '-s', 'outbox', '--duration=3', '--api-env', 'RATE_LIMIT_ORG=5', '--large']);
    expect(o).toMatchObject({ scenarios: ['cached-read', 'burst', 'outbox'], durationSec: 3, large: true, apiEnv: { RATE_LIMIT_ORG: '5' } });
  });

  it('rejects unknown scenarios, bad numbers and malformed settings with a clear message', () => {
    expect(() => parseBenchArgs(['--scenario', 'nope'])).toThrow(/unknown scenario "nope"/);
    expect(() => parseBenchArgs(['--duration', '0'])).toThrow(/--duration must be a positive integer/);
    expect(() => parseBenchArgs(['--connections', 'many'])).toThrow(/positive integer/);
    expect(() => parseBenchArgs(['--api-env', 'NOEQUALS'])).toThrow(/KEY=VALUE/);
    expect(() => parseBenchArgs(['--frobnicate'])).toThrow(/unknown option/);
  });

  it('has a unique name for every scenario', () => {
    expect(new Set(SCENARIOS.map((s) => s.name)).size).toBe(SCENARIOS.length);
  });
});
