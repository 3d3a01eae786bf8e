import { describe, expect, it } from 'vitest';
import { parseBenchArgs, SCENARIOS } from './run.ts';

describe('bench arguments', () => {
  it('defaults to every scenario with short durations', () => {
    const o = parseBenchArgs([]);
    expect(o).toMatchObject({ scenarios: [], durationSec: 5, connections: 50, large: false, baselines: true });
  });

  it('selects scenarios by name, comma-separated or repeated, and passes API settings through', () => {
    const o = parseBenchArgs(['--scenario', 'cached-read,burst', '-s', 'outbox', '--duration=3', '--api-env', 'RATE_LIMIT_ORG=5', '--large']);
    expect(o).toMatchObject({ scenarios: ['cached-read', 'burst', 'outbox'], durationSec: 3, large: true, apiEnv: { RATE_LIMIT_ORG: '5' } });
  });

  it('rejects unknown scenarios, bad numbers and malformed settings with a clear message', () => {
    expect(() => parseBenchArgs(['--scenario', 'nope'])).toThrow(/unknown scenario "nope"/);
    expect(() => parseBenchArgs(['--duration', '0'])).toThrow(/--duration must be a positive integer/);
    expect(() => parseBenchArgs(['--connections', 'many'])).toThrow(/positive integer/);
    expect(() => parseBenchArgs(['--api-env', 'NOEQUALS'])).toThrow(/KEY=VALUE/);
    expect(() => parseBenchArgs(['--frobnicate'])).toThrow(/unknown option/);
  });

  it('has a unique name for every scenario', () => {
    expect(new Set(SCENARIOS.map((s) => s.name)).size).toBe(SCENARIOS.length);
  });
});
