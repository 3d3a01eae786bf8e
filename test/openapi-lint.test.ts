import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { buildOpenApi } from '../scripts/openapi.ts';
import { createOperationIds, deriveOperationId } from '../src/platform/http/openapi-ids.ts';

const REDOCLY = path.resolve(import.meta.dirname, '../node_modules/.bin/redocly');

describe('the OpenAPI document', () => {
  it("is clean under Redocly's recommended ruleset: no error, no warning", async () => {
    const doc = await buildOpenApi();
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'plinth-openapi-'));
    try {
      const file = path.join(dir, 'openapi.json');
      fs.writeFileSync(file, JSON.stringify(doc));
      const r = spawnSync(REDOCLY, ['lint', file, '--format=json'], { encoding: 'utf8', cwd: dir, timeout: 60_000 });
      const report = JSON.parse(r.stdout.slice(r.stdout.indexOf('{'))) as { totals: { errors: number; warnings: number }; problems: { ruleId: string; message: string }[] };
      expect(report.problems.map((p) => `${p.ruleId}: ${p.message}`)).toEqual([]);
      expect(report.totals).toMatchObject({ errors: 0, warnings: 0 });
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
    const ids = Object.values(doc.paths as Record<string, Record<string, { operationId?: string }>>).flatMap((ops) => Object.values(ops).map((o) => o.operationId));
    expect(ids.every(Boolean)).toBe(true);
    expect(new Set(ids).size).toBe(ids.length);
  });

  it('derives an operationId from method and path when a route declares none, and refuses a duplicate', () => {
    expect(deriveOperationId('GET', '/v1/orgs/:orgId/projects')).toBe('listOrgsProjects');
    expect(deriveOperationId('GET', '/v1/orgs/:orgId/projects/:projectId')).toBe('getOrgsProjectsByProjectId');
    expect(deriveOperationId('DELETE', '/v1/me/sessions/:sessionId')).toBe('deleteMeSessionsBySessionId');
    expect(deriveOperationId('POST', '/v1/orgs/:orgId/api-keys')).toBe('createOrgsApiKeys');
    const claim = createOperationIds();
    expect(claim('GET', '/v1/a', 'listThings')).toBe('listThings');
    expect(() => claim('GET', '/v1/b', 'listThings')).toThrow(/already used by GET \/v1\/a/);
  });
});
