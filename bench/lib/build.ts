import { execFile } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import { ROOT } from './processes.ts';

const exec = promisify(execFile);

/** The compiled entry point the bench (like the image) runs: `node dist/src/cli.js start`. */
export const COMPILED_CLI = 'dist/src/cli.js';
export const SOURCE_CLI = 'src/cli.ts';

/** How the bench starts the API: the production build (default) or the TypeScript sources through tsx. */
export type ApiRuntime = 'dist' | 'tsx';

export function apiCommand(runtime: ApiRuntime): { runtime: 'node' | 'tsx'; args: string[] } {
  return runtime === 'dist' ? { runtime: 'node', args: [COMPILED_CLI, 'start'] } : { runtime: 'tsx', args: [SOURCE_CLI, 'start'] };
}

function newestMtime(dir: string): number {
  let newest = 0;
  for (const e of fs.readdirSync(dir, { recursive: true, withFileTypes: true })) {
    if (!e.isFile() || !/\.(ts|txt)$/.test(e.name) || e.name.endsWith('.test.ts')) continue;
    newest = Math.max(newest, fs.statSync(path.join(e.parentPath, e.name)).mtimeMs);
  }
  return newest;
}

/**
 * Makes sure dist/ holds a build of the current sources: runs `npm run build` (scripts/build.mjs), or with
 * `build: false` only checks that dist/ exists and is not older than src/ and migrations/. Throws an error
 * that says what to do; the bench never silently falls back to tsx.
 */
export async function ensureCompiledBuild(opts: { build: boolean; root?: string; log?: (m: string) => void }): Promise<{ buildSec?: number }> {
  const root = opts.root ?? ROOT;
  const cli = path.join(root, COMPILED_CLI);
  if (!opts.build) {
    if (!fs.existsSync(cli)) throw new Error(`--no-build: ${COMPILED_CLI} does not exist; run \`npm run build\` first (or drop --no-build, or use --api tsx)`);
    const built = fs.statSync(cli).mtimeMs;
    const sources = Math.max(newestMtime(path.join(root, 'src')), newestMtime(path.join(root, 'migrations')));
    if (sources > built) throw new Error(`--no-build: dist/ is older than the sources (changed since the last build); run \`npm run build\` (or drop --no-build)`);
    return {};
  }
  opts.log?.('building the API (npm run build → dist/)');
  const started = performance.now();
  try {
    await exec(process.execPath, [path.join(root, 'scripts/build.mjs')], { cwd: root, timeout: 10 * 60_000, maxBuffer: 16 * 1024 * 1024 });
  } catch (err) {
    const e = err as Error & { stdout?: string; stderr?: string };
    const out = `${e.stdout ?? ''}${e.stderr ?? ''}`.trim().split('\n').slice(-15).join('\n');
    throw new Error(`npm run build failed — the bench runs the compiled API from dist/ (use --api tsx to bench the sources instead):\n${out || e.message}`);
  }
  if (!fs.existsSync(cli)) throw new Error(`npm run build finished but ${COMPILED_CLI} is missing`);
  return { buildSec: Math.round((performance.now() - started) / 100) / 10 };
}
