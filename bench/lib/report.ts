import type { SecondSample } from './stats.ts';
import type { BaselineResult, ScenarioResult, TargetResult } from './types.ts';

export interface BenchReport {
  startedAt: string;
  finishedAt: string;
  machine: { cpus: number; cpuModel: string; memTotalGb: number; loadAvgAtStart: number[]; node: string; note: string };
  options: Record<string, unknown>;
  baselines: BaselineResult[];
  scenarios: ScenarioResult[];
  /** runtime: the API ran compiled (dist/) or through tsx; firstStartMs: its spawn → ready, migrations included. */
  api: {
    rssPeakMb: number;
    rssLastMb: number;
    helloBaselineRssMb?: number;
    runtime?: 'dist' | 'tsx';
    firstStartMs?: number;
    /** Production's two processes (API + worker, the default) or one process running both roles (`--single-process`). */
    topology?: 'api+worker' | 'single-process';
    workerRssPeakMb?: number;
    workerRssLastMb?: number;
  };
  targets: TargetResult[];
}

const pad = (s: string, n: number) => (s.length >= n ? s.slice(0, n) : s + ' '.repeat(n - s.length));
const fmt = (n: number | undefined, d = 1) => (n === undefined ? '-' : (Math.round(n * 10 ** d) / 10 ** d).toString());

export function verdict(pass: boolean | null): string {
  return pass === null ? 'n/a' : pass ? 'PASS' : 'MISS';
}

const topology = (r: BenchReport) => (r.api.topology === 'single-process' ? 'one process, both roles' : r.api.topology === 'api+worker' ? 'role api, worker in its own process' : 'roles not recorded');
const workerLine = (r: BenchReport) => (r.api.workerRssPeakMb !== undefined ? `; worker RSS: peak ${r.api.workerRssPeakMb} MB, last ${r.api.workerRssLastMb} MB` : '');

/** Console table: baselines, scenarios with ratios, then every target with pass/miss. */
export function renderTable(r: BenchReport): string {
  const lines: string[] = [];
  const row = (cols: string[], widths: number[]) => cols.map((c, i) => pad(c, widths[i]!)).join('  ');
  const w = [16, 10, 10, 9, 9, 9, 8, 40];
  lines.push(row(['name', 'status', 'ok req/s', 'p50 ms', 'p95 ms', 'p99 ms', 'ratio', 'endpoint / note'], w));
  lines.push('-'.repeat(w.reduce((a, b) => a + b + 2, 0)));
  for (const b of r.baselines) {
    const l = b.load?.latencyMs;
    lines.push(row([`base:${b.name}`, b.status, fmt(b.okPerSec, 0), fmt(l?.p50), fmt(l?.p95), fmt(l?.p99), '1.00', b.reason ?? b.title], w));
  }
  for (const s of r.scenarios) {
    const l = s.load?.latencyMs;
    const note = s.status === 'ok' ? (s.endpoint ?? '') : (s.reason ?? '');
    lines.push(row([s.name, s.status, fmt(s.load?.okPerSec, 0), fmt(l?.p50), fmt(l?.p95), fmt(l?.p99), s.ratio === undefined ? '-' : s.ratio.toFixed(2), note], w));
  }
  lines.push('');
  lines.push(row(['target', 'verdict', 'measured', 'threshold', 'description'], [6, 8, 14, 14, 60]));
  for (const t of r.targets) lines.push(row([t.id, verdict(t.pass), t.measured, t.threshold, t.description], [6, 8, 14, 14, 60]));
  lines.push('');
  lines.push(`API process (${r.api.runtime === 'tsx' ? 'sources via tsx' : 'compiled dist/'}, ${topology(r)}) RSS: peak ${r.api.rssPeakMb} MB, last ${r.api.rssLastMb} MB${workerLine(r)} (hello-world baseline process: ${r.api.helloBaselineRssMb ?? '-'} MB) · ${r.machine.cpus} CPUs · load avg at start ${r.machine.loadAvgAtStart.join(' ')}`);
  return lines.join('\n');
}

const esc = (s: unknown) => String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

/** Latency (p50/p95/p99) and throughput per second as one inline SVG; no scripts, no external assets. */
export function renderChart(series: readonly SecondSample[], opts: { title: string; marks?: { at: number; label: string }[] }): string {
  const W = 720, H = 220, L = 50, R = 50, T = 24, B = 28;
  const pw = W - L - R, ph = H - T - B;
  if (series.length === 0) return `<p>${esc(opts.title)}: no samples</p>`;
  const maxLat = Math.max(1, ...series.map((s) => s.p99));
  const maxRps = Math.max(1, ...series.map((s) => s.count));
  const x = (t: number) => L + (series.length <= 1 ? 0 : (t / (series.length - 1)) * pw);
  const yl = (v: number) => T + ph - (v / maxLat) * ph;
  const yr = (v: number) => T + ph - (v / maxRps) * ph;
  const line = (key: 'p50' | 'p95' | 'p99', color: string) =>
    `<polyline fill="none" stroke="${color}" stroke-width="1.6" points="${series.map((s) => `${x(s.t).toFixed(1)},${yl(s[key]).toFixed(1)}`).join(' ')}"/>`;
  const bars = series
    .map((s) => {
      const bw = Math.max(1, pw / series.length - 2);
      const ok = `<rect x="${(x(s.t) - bw / 2).toFixed(1)}" y="${yr(s.ok).toFixed(1)}" width="${bw.toFixed(1)}" height="${(T + ph - yr(s.ok)).toFixed(1)}" fill="#cfe3f7"/>`;
      const rej = s.count > s.ok
        ? `<rect x="${(x(s.t) - bw / 2).toFixed(1)}" y="${yr(s.count).toFixed(1)}" width="${bw.toFixed(1)}" height="${(yr(s.ok) - yr(s.count)).toFixed(1)}" fill="#f7d4cf"/>`
        : '';
      return ok + rej;
    })
    .join('');
  const marks = (opts.marks ?? [])
    .map((m) => `<line x1="${x(m.at)}" x2="${x(m.at)}" y1="${T}" y2="${T + ph}" stroke="#888" stroke-dasharray="4 3"/><text x="${x(m.at) + 3}" y="${T + 10}" font-size="10" fill="#555">${esc(m.label)}</text>`)
    .join('');
  const ticks = [0, 0.5, 1]
    .map((f) => `<text x="${L - 4}" y="${yl(maxLat * f) + 3}" font-size="10" text-anchor="end">${fmt(maxLat * f, 0)}</text>` +
      `<text x="${W - R + 4}" y="${yr(maxRps * f) + 3}" font-size="10">${fmt(maxRps * f, 0)}</text>`)
    .join('');
  return `<figure><svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 ${W} ${H}" width="${W}" height="${H}" role="img" aria-label="${esc(opts.title)}">
<text x="${L}" y="14" font-size="12" font-weight="bold">${esc(opts.title)}</text>
<rect x="${L}" y="${T}" width="${pw}" height="${ph}" fill="none" stroke="#ddd"/>${bars}${marks}
${line('p50', '#2a9d8f')}${line('p95', '#e9a23b')}${line('p99', '#d1495b')}${ticks}
<text x="${L}" y="${H - 8}" font-size="10">0 s</text><text x="${W - R}" y="${H - 8}" font-size="10" text-anchor="end">${series.length - 1} s</text>
<text x="8" y="${T + ph / 2}" font-size="10" transform="rotate(-90 8 ${T + ph / 2})">latency ms</text>
<text x="${W - 6}" y="${T + ph / 2}" font-size="10" transform="rotate(90 ${W - 6} ${T + ph / 2})">responses/s</text>
</svg><figcaption><span style="color:#2a9d8f">■ p50</span> <span style="color:#e9a23b">■ p95</span> <span style="color:#d1495b">■ p99</span> <span style="color:#9cc3ea">■ 2xx/s</span> <span style="color:#e8a79d">■ non-2xx/s</span></figcaption></figure>`;
}

function badge(pass: boolean | null): string {
  const [bg, label] = pass === null ? ['#ddd', 'n/a'] : pass ? ['#cdeccd', 'PASS'] : ['#f6cccc', 'MISS'];
  return `<span style="background:${bg};padding:1px 6px;border-radius:3px">${label}</span>`;
}

/** A self-contained HTML report: inline CSS and SVG only, so it opens offline and can be committed. */
export function renderHtml(r: BenchReport): string {
  const rows = [
    ...r.baselines.map((b) => `<tr><td>baseline: ${esc(b.name)}</td><td>${esc(b.status)}</td><td>${fmt(b.okPerSec, 0)}</td><td>${fmt(b.load?.latencyMs.p50)}</td><td>${fmt(b.load?.latencyMs.p95)}</td><td>${fmt(b.load?.latencyMs.p99)}</td><td>1.00</td><td>${esc(b.reason ?? b.title)}</td></tr>`),
    ...r.scenarios.map((s) => `<tr><td>${esc(s.name)}</td><td>${esc(s.status)}</td><td>${fmt(s.load?.okPerSec, 0)}</td><td>${fmt(s.load?.latencyMs.p50)}</td><td>${fmt(s.load?.latencyMs.p95)}</td><td>${fmt(s.load?.latencyMs.p99)}</td><td>${s.ratio === undefined ? '-' : `${s.ratio.toFixed(2)}× ${esc(s.baseline ?? '')}`}</td><td>${esc(s.status === 'ok' ? (s.endpoint ?? '') : (s.reason ?? ''))}</td></tr>`),
  ].join('\n');
  const targets = r.targets.map((t) => `<tr><td>${esc(t.id)}</td><td>${badge(t.pass)}</td><td>${esc(t.measured)}</td><td>${esc(t.threshold)}</td><td>${esc(t.description)}</td></tr>`).join('\n');
  const charts: string[] = [];
  for (const b of r.baselines) if (b.load) charts.push(renderChart(b.load.series, { title: `baseline ${b.name}: ${b.title}` }));
  for (const s of r.scenarios) {
    if (!s.load) continue;
    const marks = s.name === 'burst' && s.metrics
      ? [{ at: Number(s.metrics.burstStartSec), label: 'burst' }, { at: Number(s.metrics.burstEndSec), label: 'recovery' }]
      : [];
    const extra = s.metrics ? `<pre>${esc(JSON.stringify(s.metrics, null, 1))}</pre>` : '';
    charts.push(`<h3>${esc(s.name)} — ${esc(s.title)}</h3>` + renderChart(s.load.series, { title: `${s.name}: ${s.endpoint ?? ''}`, marks }) + extra);
    for (const [name, phase] of Object.entries(s.phases ?? {})) {
      if (s.name === 'burst') continue; // one timeline already
      if (phase === s.load) continue;
      charts.push(renderChart(phase.series, { title: `${s.name} / ${name}` }));
    }
  }
  return `<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Plinth bench ${esc(r.startedAt)}</title>
<style>body{font:14px/1.4 system-ui,sans-serif;margin:24px;max-width:1000px}table{border-collapse:collapse;margin:8px 0 20px}td,th{border:1px solid #ddd;padding:3px 8px;text-align:left}th{background:#f4f4f4}pre{background:#f8f8f8;padding:6px;font-size:12px;overflow:auto}figure{margin:8px 0 16px}figcaption{font-size:12px}</style></head><body>
<h1>Plinth bench</h1>
<p>${esc(r.startedAt)} → ${esc(r.finishedAt)} · ${r.machine.cpus} × ${esc(r.machine.cpuModel)} · ${r.machine.memTotalGb} GB RAM · Node ${esc(r.machine.node)} · load average at start ${esc(r.machine.loadAvgAtStart.join(' '))}</p>
<p><em>${esc(r.machine.note)}</em></p>
<h2>Results</h2><table><tr><th>name</th><th>status</th><th>2xx/s</th><th>p50 ms</th><th>p95 ms</th><th>p99 ms</th><th>ratio</th><th>endpoint / note</th></tr>
${rows}</table>
<h2>Targets</h2><table><tr><th>id</th><th>verdict</th><th>measured</th><th>threshold</th><th>description</th></tr>
${targets}</table>
<p>API process (${r.api.runtime === 'tsx' ? 'sources via tsx' : 'compiled dist/'}, ${esc(topology(r))}) RSS: peak ${r.api.rssPeakMb} MB, last ${r.api.rssLastMb} MB${esc(workerLine(r))} (hello-world baseline process, started the same way: ${r.api.helloBaselineRssMb ?? '-'} MB).</p>
<h2>Latency and throughput over time</h2>
${charts.join('\n')}
<h2>Options</h2><pre>${esc(JSON.stringify(r.options, null, 1))}</pre>
</body></html>`;
}

export interface FaultsReport {
  finishedAt: string;
  cluster: { apis: number; workers: number; clients: number };
  results: Array<{
    fault: string; status: string; reason?: string; endpoint?: string; table?: string; injectedAtSec?: number; restoredAtSec?: number;
    acknowledged?: number; acknowledgedLost?: number; duplicates?: number; clientVisibleErrors?: number; retryableRejections?: number;
    recoverySec?: number; errorsByKind?: Record<string, number>; series?: SecondSample[];
    targets?: { id: string; description: string; measured: string; pass: boolean }[];
  }>;
}

/** Fault runs: one row per fault, its targets, and each attempt's latency/status over time. */
export function renderFaultsHtml(r: FaultsReport): string {
  const rows = r.results.map((f) => `<tr><td>${esc(f.fault)}</td><td>${esc(f.status)}</td><td>${f.acknowledged ?? '-'}</td><td>${f.acknowledgedLost ?? '-'}</td><td>${f.duplicates ?? '-'}</td><td>${f.clientVisibleErrors ?? '-'} ${f.errorsByKind && Object.keys(f.errorsByKind).length ? esc(JSON.stringify(f.errorsByKind)) : ''}</td><td>${f.retryableRejections ?? '-'}</td><td>${f.recoverySec ?? '-'}</td><td>${(f.targets ?? []).map((t) => `${esc(t.id)} ${badge(t.pass)}`).join(' ')}${esc(f.reason ?? '')}</td></tr>`).join('\n');
  const charts = r.results.filter((f) => f.series).map((f) => renderChart(f.series!, {
    title: `${f.fault}: every attempt on ${f.endpoint ?? ''}`,
    marks: [
      ...(f.injectedAtSec !== undefined ? [{ at: Math.floor(f.injectedAtSec), label: 'fault' }] : []),
      ...(f.restoredAtSec !== undefined ? [{ at: Math.floor(f.restoredAtSec), label: 'restored' }] : []),
    ],
  })).join('\n');
  return `<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Plinth fault runs ${esc(r.finishedAt)}</title>
<style>body{font:14px/1.4 system-ui,sans-serif;margin:24px;max-width:1000px}table{border-collapse:collapse}td,th{border:1px solid #ddd;padding:3px 8px;text-align:left}th{background:#f4f4f4}</style></head><body>
<h1>Plinth fault runs</h1><p>${esc(r.finishedAt)} · ${r.cluster.apis} API instances, ${r.cluster.workers} workers behind HAProxy · ${r.cluster.clients} writers retrying on the same Idempotency-Key</p>
<table><tr><th>fault</th><th>status</th><th>acked</th><th>lost</th><th>duplicates</th><th>client-visible errors</th><th>429/503/409</th><th>recovery s</th><th>targets</th></tr>
${rows}</table>
<p>Targets: F1 acknowledged writes lost = 0 · F2 duplicates = 0 · F3 only 503/429 with Retry-After · F4 recovery &lt; 10 s · F5 no API instance crashes.</p>
${charts}
</body></html>`;
}
