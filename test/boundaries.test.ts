import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { describe, expect, it } from 'vitest';

const ROOT = path.resolve(import.meta.dirname, '..');

function depcruise(dir: string) {
  const res = spawnSync(
    process.execPath,
    [path.join(ROOT, 'node_modules/dependency-cruiser/bin/dependency-cruise.mjs'), 'src', '--config', path.join(ROOT, '.dependency-cruiser.cjs'), '--output-type', 'err'],
    { cwd: path.join(ROOT, dir), encoding: 'utf8', env: { ...process.env, NO_COLOR: '1', FORCE_COLOR: '0' } },
  );
  // eslint-disable-next-line no-control-regex
  return { code: res.status, output: `${res.stdout}${res.stderr}`.replace(/\u001b\[[0-9;]*m/g, '') };
}

describe('module boundaries (dependency-cruiser, as run by npm run lint)', () => {
  it('fails on a deep import into another module, on platform → module and on module → composition root', () => {
    const res = depcruise('test/fixtures/boundaries/bad');
    expect(res.code).not.toBe(0);
    expect(res.output).toContain('module-through-index-only');
    expect(res.output).toContain('src/modules/alpha/alpha.service.ts → src/modules/beta/beta.repo.ts');
    expect(res.output).toContain('platform-not-to-modules');
    expect(res.output).toContain('modules-not-to-composition');
    expect(res.output).toContain('src/modules/alpha/index.ts → src/app.ts');
  });

  it('passes when modules use each other only through index.ts', () => {
    const res = depcruise('test/fixtures/boundaries/good');
    expect(res.output).not.toContain('error');
    expect(res.code).toBe(0);
  });

  it('the real source tree is clean', () => {
    const res = depcruise('.');
    expect(res.output).not.toMatch(/error /);
    expect(res.code).toBe(0);
  });
});
