import fs from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';

/**
 * Summarizes a V8 `.cpuprofile` (from `npm run bench -- --cpu-prof DIR`): self time by function and by
 * source (a node_modules package, a file of ours, or V8/Node internals), over the whole profile or only
 * its last `--last SEC` seconds (the load run, without start-up and fixtures).
 */
interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  children?: number[];
}
interface CpuProfile {
  nodes: ProfileNode[];
  startTime: number;
  endTime: number;
  samples: number[];
  timeDeltas: number[];
}

export interface ProfileSummary {
  totalMs: number;
  functions: Array<{ name: string; ms: number; share: number }>;
  sources: Array<{ name: string; ms: number; share: number }>;
}

function sourceOf(url: string, functionName: string): string {
  if (!url) return functionName.startsWith('(') ? functionName : '(native)';
  const nm = url.lastIndexOf('node_modules/');
  if (nm >= 0) {
    const rest = url.slice(nm + 'node_modules/'.length).split('/');
    return rest[0]!.startsWith('@') ? `${rest[0]}/${rest[1]}` : rest[0]!;
  }
  if (url.startsWith('node:')) return url;
  const dist = url.indexOf('/dist/');
  return dist >= 0 ? url.slice(dist + 1) : path.basename(url);
}

export function summarizeProfile(profile: CpuProfile, lastSec?: number, top = 40): ProfileSummary {
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const totalUs = profile.endTime - profile.startTime;
  const fromUs = lastSec ? profile.endTime - lastSec * 1e6 : profile.startTime;
  const self = new Map<number, number>();
  let t = profile.startTime;
  for (let i = 0; i < profile.samples.length; i++) {
    t += profile.timeDeltas[i] ?? 0;
    if (t < fromUs) continue;
    const dt = profile.timeDeltas[i + 1] ?? 0;
    self.set(profile.samples[i]!, (self.get(profile.samples[i]!) ?? 0) + dt);
  }
  const fns = new Map<string, number>();
  const srcs = new Map<string, number>();
  let sum = 0;
  for (const [id, us] of self) {
    const n = byId.get(id)!;
    const { functionName, url, lineNumber } = n.callFrame;
    const src = sourceOf(url, functionName);
    const key = `${functionName || '(anonymous)'} ${src}${url ? `:${lineNumber + 1}` : ''}`;
    fns.set(key, (fns.get(key) ?? 0) + us);
    srcs.set(src, (srcs.get(src) ?? 0) + us);
    sum += us;
  }
  const rank = (m: Map<string, number>) =>
    [...m.entries()].sort((a, b) => b[1] - a[1]).slice(0, top).map(([name, us]) => ({ name, ms: Math.round(us / 1000), share: Math.round((us / sum) * 1000) / 10 }));
  return { totalMs: Math.round((lastSec ? Math.min(totalUs, lastSec * 1e6) : totalUs) / 1000), functions: rank(fns), sources: rank(srcs) };
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const args = process.argv.slice(2);
  const lastIdx = args.indexOf('--last');
  const file = args.find((a, i) => !a.startsWith('--') && i !== lastIdx + 1);
  const last = lastIdx >= 0 ? Number(args[lastIdx + 1]) : undefined;
  if (!file) {
    console.error('usage: npx tsx bench/lib/profile-summary.ts FILE.cpuprofile [--last SEC]');
    process.exit(2);
  }
  const s = summarizeProfile(JSON.parse(fs.readFileSync(file, 'utf8')) as CpuProfile, last);
  console.log(`profile: ${s.totalMs} ms${last ? ` (last ${last} s)` : ''}\n\nself time by function:`);
  for (const f of s.functions) console.log(`${String(f.share).padStart(5)} %  ${String(f.ms).padStart(6)} ms  ${f.name}`);
  console.log('\nself time by source:');
  for (const f of s.sources) console.log(`${String(f.share).padStart(5)} %  ${String(f.ms).padStart(6)} ms  ${f.name}`);
}
