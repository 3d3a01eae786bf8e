import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import YAML from 'yaml';
import { generateSloRules, readSlos, SLO_RULES_FILE } from '../../scripts/slo-rules.ts';

const ROOT = path.resolve(import.meta.dirname, '../..');
const RULE_FILES = fs.readdirSync(path.join(ROOT, 'deploy/prometheus')).filter((f) => f.endsWith('.rules.yml'));
const SECTIONS = ['Symptom', 'Dashboards and queries', 'Likely causes', 'Remediation', 'Escalation'];

interface Rule { alert?: string; annotations?: Record<string, string> }
const alerts: Rule[] = RULE_FILES.flatMap((f) => {
  const doc = YAML.parse(fs.readFileSync(path.join(ROOT, 'deploy/prometheus', f), 'utf8')) as { groups: { rules: Rule[] }[] };
  return doc.groups.flatMap((g) => g.rules).filter((r) => r.alert);
});

describe('every alert has a runbook', () => {
  it('finds the alerts of every rule file (SLO burn alerts included)', () => {
    expect(RULE_FILES).toEqual(expect.arrayContaining(['plinth.rules.yml', 'plinth.slo.rules.yml']));
    expect(new Set(alerts.map((a) => a.alert))).toContain('PlinthSLOBurnFast');
  });

  it.each([...new Set(alerts.map((a) => a.alert!))])('%s: runbook_url names a page with every section', (name) => {
    for (const rule of alerts.filter((a) => a.alert === name)) {
      expect(rule.annotations?.runbook_url, `${name} has no runbook_url`).toBe(`docs/runbooks/${name}.md`);
    }
    const file = path.join(ROOT, 'docs/runbooks', `${name}.md`);
    expect(fs.existsSync(file), `docs/runbooks/${name}.md is missing`).toBe(true);
    const text = fs.readFileSync(file, 'utf8');
    expect(text.startsWith(`# ${name}\n`)).toBe(true);
    for (const section of SECTIONS) expect(text, `${name}: section "${section}"`).toContain(`\n## ${section}\n`);
    expect(fs.readFileSync(path.join(ROOT, 'docs/runbooks/README.md'), 'utf8')).toContain(`[${name}.md](${name}.md)`);
  });
});

describe('SLOs as code', () => {
  it('deploy/prometheus/plinth.slo.rules.yml is what `npm run slo` generates from deploy/slo/slos.yml', () => {
    expect(fs.readFileSync(SLO_RULES_FILE, 'utf8')).toBe(generateSloRules(readSlos()));
  });

  it('refuses a latency threshold that is not a histogram bucket, and a repeated name', () => {
    const dir = fs.mkdtempSync(path.join(ROOT, '.plinth-slo-'));
    try {
      const file = path.join(dir, 'slos.yml');
      fs.writeFileSync(file, 'slos:\n  - { name: a, description: x, routes: "/v1/.*", sli: latency, threshold_seconds: 0.3, objective: 0.99 }\n');
      expect(() => readSlos(file)).toThrow(/histogram buckets/);
      fs.writeFileSync(file, 'slos:\n  - { name: a, description: x, routes: "/v1/.*", sli: availability, objective: 0.99 }\n  - { name: a, description: x, routes: "/v1/.*", sli: availability, objective: 0.99 }\n');
      expect(() => readSlos(file)).toThrow(/repeated/);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
