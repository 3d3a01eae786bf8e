import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { registry, startDefaultMetrics } from './metrics.ts';

const deploy = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../../deploy');

/** Every series name Plinth exports: histograms as their _bucket/_count/_sum series. */
async function exportedSeries(): Promise<Set<string>> {
  startDefaultMetrics();
  const names = new Set<string>();
  for (const m of await registry.getMetricsAsJSON()) {
    if (String(m.type) === 'histogram') for (const s of ['_bucket', '_count', '_sum']) names.add(m.name + s);
    else names.add(m.name);
  }
  return names;
}

/** Metric names a PromQL expression reads (ours and the Node defaults), ignoring recording rules. */
function referencedMetrics(expr: string): string[] {
  return [...expr.matchAll(/\b((?:plinth|nodejs|process)_[a-z0-9_]+)\b/g)].map((m) => m[1]!);
}

describe('deploy/: alert rules and dashboard read only metrics Plinth exports', () => {
  it('the Grafana dashboard: valid JSON, unique panel ids, every query on an exported metric', async () => {
    const series = await exportedSeries();
    const dashboard = JSON.parse(fs.readFileSync(path.join(deploy, 'grafana/plinth-dashboard.json'), 'utf8'));
    expect(dashboard.uid).toBe('plinth-overview');
    const ids = dashboard.panels.map((p: { id: number }) => p.id);
    expect(new Set(ids).size).toBe(ids.length);
    const exprs: string[] = dashboard.panels.flatMap((p: { targets?: Array<{ expr: string }> }) => (p.targets ?? []).map((t) => t.expr));
    expect(exprs.length).toBeGreaterThan(20);
    for (const expr of exprs) {
      const names = referencedMetrics(expr);
      expect(names.length, expr).toBeGreaterThan(0);
      for (const name of names) expect(series.has(name), `${name} in ${expr}`).toBe(true);
    }
  });

  it('the Prometheus rules', async () => {
    const series = await exportedSeries();
    const rules = fs.readFileSync(path.join(deploy, 'prometheus/plinth.rules.yml'), 'utf8');
    const exprs = [...rules.matchAll(/^\s+expr: (.+)$/gm)].map((m) => m[1]!);
    expect(exprs.length).toBeGreaterThanOrEqual(10);
    for (const expr of exprs) for (const name of referencedMetrics(expr)) expect(series.has(name), `${name} in ${expr}`).toBe(true);
    for (const alert of ['PlinthHighLatencyP95', 'PlinthHigh5xxRatio', 'PlinthOutboxLagging', 'PlinthDeadLettersGrowing', 'PlinthReadinessFlapping']) {
      expect(rules).toContain(`alert: ${alert}`);
    }
  });
});
