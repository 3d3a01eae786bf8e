#!/usr/bin/env node
// Installed entry point: registers the TypeScript loader, then runs the CLI (no build step needed).
import { register } from 'tsx/esm/api';

register();
const { runCli } = await import('../src/cli.ts');
await runCli(process.argv.slice(2));
