import { describe, expect, it } from 'vitest';
import { renderChart, renderFaultsHtml, renderHtml, renderTable, type BenchReport } from './report.ts';
import { target } from './types.ts';

const series = [
  { t: 0, count: 100, ok: 100, p50: 2, p95: 5, p99: 9 },
  { t: 1, count: 120, ok: 90, p50: 3, p95: 8, p99: 20 },
];
const load = {
  durationSec: 2, requests: 220, okPerSec: 95, statuses: { 200: 190, 429: 30 },
  latencyMs: { p50: 2, p95: 7, p99: 18, max: 25, mean: 3 }, okLatencyMs: { p50: 2, p95: 6, p99: 15, max: 20, mean: 3 },
  errors: 0, timeouts: 0, rejectedWithoutRetryAfter: 0, unexpected: 0, series,
};
const report: BenchReport = {
  startedAt: '2026-01-01T00:00:00.000Z', finishedAt: '2026-01-01T00:01:00.000Z',
  machine: { cpus: 2, cpuModel: 'test <cpu>', memTotalGb: 4, loadAvgAtStart: [1, 1, 1], node: 'v20', note: 'note' },
  options: {},
  baselines: [{ name: 'hello', title: 'hello', status: 'ok', okPerSec: 190, load }],
  scenarios: [
    { name: 'cached-read', title: 'cached', status: 'ok', endpoint: 'GET /x', load, baseline: 'hello', ratio: 0.5, targets: [target('P1', 'cached ≥ 0.6× hello', 0.5, 0.6, '×', '>=')] },
    { name: 'outbox', title: 'outbox', status: 'skipped', reason: 'async backbone not available', targets: [target('P6a', 'outbox', undefined, 2000, '/s', '>=')] },
  ],
  api: { rssPeakMb: 120, rssLastMb: 110 },
  targets: [target('P1', 'cached ≥ 0.6× hello', 0.5, 0.6, '×', '>='), target('P6a', 'outbox', undefined, 2000, '/s', '>='), target('P7', 'rss', 120, 150, 'MB', '<')],
};

describe('target', () => {
  it('evaluates each comparison and reports n/a without a measurement', () => {
    expect(target('P1', '', 0.61, 0.6, '×', '>=').pass).toBe(true);
    expect(target('P1', '', 0.59, 0.6, '×', '>=').pass).toBe(false);
    expect(target('P5b', '', 250, 250, 'ms', '<').pass).toBe(false);
    expect(target('P4', '', 1.5, 1.5, '×', '<=').pass).toBe(true);
    expect(target('P2', '', undefined, 0.85, '×', '>=')).toMatchObject({ pass: null, measured: 'n/a' });
  });
});

describe('report rendering', () => {
  it('prints PASS/MISS/n/a per target and skipped reasons in the table', () => {
    const table = renderTable(report);
    expect(table).toMatch(/P1\s+MISS\s+0\.50×/);
    expect(table).toMatch(/P6a\s+n\/a/);
    expect(table).toMatch(/P7\s+PASS\s+120 MB/);
    expect(table).toContain('async backbone not available');
  });

  it('renders a self-contained HTML page with an inline SVG chart and escaped text', () => {
    const html = renderHtml(report);
    expect(html).toContain('<svg');
    expect(html).not.toMatch(/<script|https?:\/\/(?!www\.w3\.org)/);
    expect(html).toContain('test &#60;cpu&#62;');
    expect(html).toContain('polyline');
  });

  it('draws one point per second for each percentile line', () => {
    const svg = renderChart(series, { title: 't' });
    const lines = [...svg.matchAll(/<polyline[^>]*points="([^"]*)"/g)].map((m) => m[1]!);
    expect(lines).toHaveLength(3);
    for (const l of lines) expect(l.split(' ')).toHaveLength(2);
  });
});

describe('fault report', () => {
  it('shows each fault with its verdicts and a chart with the fault marked', () => {
    const html = renderFaultsHtml({
      finishedAt: 'now', cluster: { apis: 2, workers: 1, clients: 12 },
      results: [
        { fault: 'sigterm-api', status: 'ok', endpoint: 'POST /x', injectedAtSec: 1, acknowledged: 10, acknowledgedLost: 0, duplicates: 1,
          clientVisibleErrors: 0, retryableRejections: 2, recoverySec: 0, series,
          targets: [{ id: 'F1', description: '', measured: '0', pass: true }, { id: 'F2', description: '', measured: '1', pass: false }] },
        { fault: 'kill-redis', status: 'skipped', reason: 'no POST endpoint' },
      ],
    });
    expect(html).toMatch(/F1 <span[^>]*>PASS<\/span> F2 <span[^>]*>MISS/);
    expect(html).toContain('no POST endpoint');
    expect(html).toContain('>fault</text>');
  });
});
