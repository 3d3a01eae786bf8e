import fs from 'node:fs';
import path from 'node:path';

/**
 * Writes test/timings.json from the durations vitest cached in the last full `npm test` (node_modules/.vite):
 * the order a fresh clone runs its test files in (test/helpers/sequencer.ts). Files under 300 ms are left out.
 */
const dir = path.join('node_modules', '.vite', 'vitest');
const caches = fs.existsSync(dir) ? fs.readdirSync(dir).map((d) => path.join(dir, d, 'results.json')).filter((f) => fs.existsSync(f)) : [];
if (caches.length === 0) {
  console.error('no vitest results cache: run npm test first');
  process.exit(1);
}
const { results } = JSON.parse(fs.readFileSync(caches[0]!, 'utf8')) as { results: Array<[string, { duration: number }]> };
const out: Record<string, number> = {};
for (const [key, r] of results.sort((a, b) => b[1].duration - a[1].duration)) if (r.duration >= 300) out[key] = Math.round(r.duration / 100) * 100;
fs.writeFileSync(path.join('test', 'timings.json'), JSON.stringify(out, null, 2) + '\n');
console.log(`test/timings.json: ${Object.keys(out).length} files`);
