import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { freePort } from '../helpers/own-services.ts';

/** Start-up failures an operator meets first: one line naming the cause, exit 1, no stack trace. No services needed. */
const root = path.resolve(import.meta.dirname, '../..');

function plinth(args: string[], env: Record<string, string>) {
  const r = spawnSync(process.execPath, ['--import', 'tsx', path.join(root, 'src/cli.ts'), ...args], {
    cwd: root,
    env: { PATH: process.env.PATH ?? '', ...env },
    encoding: 'utf8',
    timeout: 60_000,
  });
  return { code: r.status, output: `${r.stdout}${r.stderr}`.trim() };
}

describe('plinth start with Postgres unreachable', () => {
  it.each([['start'], ['worker'], ['migrate']])('%s: one clear line, exit 1, no stack trace', async (command) => {
    const closed = await freePort(); // nothing listens there
    const r = plinth([command], {
      NODE_ENV: 'production',
      DATABASE_URL: `postgres://postgres@127.0.0.1:${closed}/plinth`,
      REDIS_URL: `redis://127.0.0.1:${closed}`,
      WEBHOOK_SECRET_KEY: randomBytes(32).toString('base64'),
    });
    expect(r.code).toBe(1);
    expect(r.output.split('\n'), r.output).toHaveLength(1);
    expect(r.output).toMatch(new RegExp(`^PostgreSQL is unreachable: connect ECONNREFUSED 127\\.0\\.0\\.1:${closed} \\(check DATABASE_URL`));
    expect(r.output).not.toMatch(/\bat .*\.(ts|js):\d+/);
  });
});
