#!/usr/bin/env node
// Installed entry point. Runs the compiled build (dist/, made by `npm run build`) when there is one, as in
// the image; otherwise the TypeScript sources through tsx (a development checkout).
import fs from 'node:fs';

const compiled = new URL('../dist/src/cli.js', import.meta.url);
if (fs.existsSync(compiled)) {
  const { runCli } = await import(compiled.href);
  await runCli(process.argv.slice(2));
} else {
  const { register } = await import('tsx/esm/api');
  register();
  const { runCli } = await import('../src/cli.ts');
  await runCli(process.argv.slice(2));
}
