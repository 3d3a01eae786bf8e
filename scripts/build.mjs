#!/usr/bin/env node
// Production build: tsc compiles src/ and migrations/ to dist/ (`.ts` specifiers become `.js`), then the
// files tsc does not copy are added, and dist/migrations gets the checksums of the migration sources.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('..', import.meta.url));
const dist = path.join(root, 'dist');
fs.rmSync(dist, { recursive: true, force: true });
execFileSync(process.execPath, [path.join(root, 'node_modules/typescript/bin/tsc'), '-p', path.join(root, 'tsconfig.build.json')], {
  stdio: 'inherit',
});

// Runtime data files read next to their module (e.g. the common-password list).
for (const entry of fs.readdirSync(path.join(root, 'src'), { recursive: true, withFileTypes: true })) {
  if (!entry.isFile() || !entry.name.endsWith('.txt')) continue;
  const from = path.join(entry.parentPath, entry.name);
  fs.copyFileSync(from, path.join(dist, path.relative(root, from)));
}

// Same function the migrator uses, so the compiled build and the sources agree on every checksum.
const { listMigrationFiles, CHECKSUMS_FILE } = await import(new URL('../dist/src/platform/migrate/migrator.js', import.meta.url).href);
const sums = Object.fromEntries(listMigrationFiles(path.join(root, 'migrations')).map((f) => [f.name, f.checksum]));
fs.writeFileSync(path.join(dist, 'migrations', CHECKSUMS_FILE), JSON.stringify(sums, null, 2) + '\n');
console.log(`built dist/ (${Object.keys(sums).length} migrations)`);
