import fs from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { build, type Plugin } from 'esbuild';

const ROOT = path.resolve(import.meta.dirname, '../..');
// Inside the repository, so the bundle's bare imports resolve from its node_modules.
const OUT_DIR = path.join(ROOT, 'node_modules', '.cache', 'plinth-test');

/** Every module keeps its own import.meta.url, so what it reads next to itself (migrations, word lists) is found as under tsx. */
const keepImportMetaUrl: Plugin = {
  name: 'keep-import-meta-url',
  setup(b) {
    b.onLoad({ filter: /\.ts$/ }, async (args) => ({
      contents: (await fs.promises.readFile(args.path, 'utf8')).replaceAll('import.meta.url', JSON.stringify(pathToFileURL(args.path).href)),
      loader: 'ts',
    }));
  },
};

/**
 * `entry` (TypeScript) bundled into one JavaScript file, for tests that start many processes from it: node
 * starts it in about half the time `--import tsx` takes (no loader thread, no per-file transpiling).
 * Packages stay external, imported from node_modules as usual. The caller removes the file when done.
 */
export async function bundleForNode(entry: string): Promise<string> {
  const outfile = path.join(OUT_DIR, `${path.basename(entry, '.ts')}.${process.pid}.mjs`);
  await build({
    entryPoints: [entry],
    outfile,
    bundle: true,
    platform: 'node',
    format: 'esm',
    target: 'node20',
    packages: 'external',
    logLevel: 'warning',
    plugins: [keepImportMetaUrl],
  });
  return outfile;
}
