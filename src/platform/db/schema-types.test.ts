import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { generateSchemaTypes, SCHEMA_TYPES_FILE } from './schema-types.ts';

const ROOT = path.resolve(import.meta.dirname, '../../..');

/** Type-checks fixture files with the project's compiler options, as `npm run typecheck` would. */
function typecheck(...files: string[]) {
  const res = spawnSync(
    process.execPath,
    [path.join(ROOT, 'node_modules/typescript/bin/tsc'), '--noEmit', '--strict', '--target', 'ES2022', '--module', 'NodeNext',
      '--moduleResolution', 'NodeNext', '--allowImportingTsExtensions', '--skipLibCheck', '--types', 'node', ...files],
    { cwd: ROOT, encoding: 'utf8' },
  );
  return { code: res.status, output: `${res.stdout}${res.stderr}` };
}

describe('table types come from the migrations', () => {
  it('schema.generated.ts is what the migrations produce (run `npm run db:types` after a migration)', async () => {
    const generated = await generateSchemaTypes();
    expect(fs.readFileSync(SCHEMA_TYPES_FILE, 'utf8')).toBe(generated);
  });

  it('a misspelled column and another module\'s table fail the typecheck; the right spelling passes', () => {
    // One compiler run for both files (tsc start-up dominates): errors only where the fixture is wrong.
    const res = typecheck('test/fixtures/typed-sql/typo.ts', 'test/fixtures/typed-sql/good.ts');
    expect(res.code).not.toBe(0);
    expect(res.output).toMatch(/typo\.ts\(6,\d+\): error/);
    expect(res.output).toMatch(/typo\.ts\(10,\d+\): error/);
    expect(res.output).toMatch(/"users"' is not assignable/);
    expect(res.output).not.toContain('good.ts');
  });
});
