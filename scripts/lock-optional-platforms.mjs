#!/usr/bin/env node
// The registry mirror reachable here lacks some other-platform optional binaries (darwin/win builds of
// rollup, msgpackr-extract, …) at the exact versions their parents pin. `npm install` skips them and
// leaves them out of package-lock.json, and then `npm ci` refuses the lock as "out of sync".
// This records each missing optional dependency in the lock as an optional entry, so `npm ci` accepts
// the lock and skips them on platforms they are not for (as it does for any failed optional install).
import fs from 'node:fs';

const file = new URL('../package-lock.json', import.meta.url);
const lock = JSON.parse(fs.readFileSync(file, 'utf8'));
const pkgs = lock.packages;
let added = 0;
for (const [key, entry] of Object.entries(pkgs)) {
  for (const [name, version] of Object.entries(entry.optionalDependencies ?? {})) {
    // Resolve the way node does: nested first, then hoisted.
    const nested = `${key ? key + '/' : ''}node_modules/${name}`;
    const hoisted = `node_modules/${name}`;
    if (pkgs[nested] || pkgs[hoisted]) continue;
    if (!/^\d+\.\d+\.\d+/.test(version)) continue;
    pkgs[hoisted] = { version, optional: true, os: ['none'] };
    added += 1;
  }
}
fs.writeFileSync(file, JSON.stringify(lock, null, 2) + '\n');
console.log(`recorded ${added} unavailable optional platform packages in package-lock.json`);
