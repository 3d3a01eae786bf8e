import fs from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { registerEventMetrics } from '../../src/platform/observability/event-metrics.ts';
import { registry, startDefaultMetrics } from '../../src/platform/observability/metrics.ts';
import { createTestDatabase, type TestDatabase } from '../../src/platform/testing/test-db.ts';

/**
 * The dashboard's job/instance variables list every Plinth process only if they come from a metric a
 * process exports without serving HTTP: the worker role has no API listener, so HTTP histograms never get
 * a series there. What a worker exports: default process metrics plus what openPlatform registers for
 * every role (registerEventMetrics) — scraped here exactly so, with no request served.
 */
describe('Grafana variables come from a metric both roles export', () => {
  let t: TestDatabase;
  let stop: () => void;
  beforeAll(async () => {
    t = await createTestDatabase();
    startDefaultMetrics();
    stop = registerEventMetrics({ db: t.db, events: { inspect: async () => ({ queues: [] }) } });
  });
  afterAll(async () => {
    stop?.();
    await t?.drop();
  });

  it('job and instance query a metric that has a sample in a process that served no request', async () => {
    const dashboard = JSON.parse(fs.readFileSync('deploy/grafana/plinth-dashboard.json', 'utf8'));
    const vars = dashboard.templating.list.filter((v: { name: string }) => v.name === 'job' || v.name === 'instance');
    expect(vars).toHaveLength(2);
    const text = await registry.metrics();
    for (const v of vars) {
      const metric = /label_values\(([a-z_:]+)/.exec(v.query.query)?.[1];
      expect(metric, v.query.query).toBeDefined();
      expect(metric).toMatch(/^plinth_/); // not a generic Node metric other jobs in the same Prometheus export
      expect(text, `${metric} has a sample without traffic`).toMatch(new RegExp(`^${metric}(\\{[^}]*\\})? `, 'm'));
      expect(v.definition).toBe(v.query.query);
    }
  });
});
