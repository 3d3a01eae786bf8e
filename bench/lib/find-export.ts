import fs from 'node:fs';
import path from 'node:path';
import { ROOT } from './processes.ts';

const HARNESS = ['lib', 'scenarios', 'baselines', 'cluster', 'results'].map((d) => path.join(ROOT, 'bench', d));

/** Finds the file under src/ (or bench/, outside this harness) that exports `name`: the owning module decides where it lives. */
export function findExport(name: string): string | undefined {
  const re = new RegExp(`export\\s+(async\\s+)?function\\s+${name}\\b|export\\s+const\\s+${name}\\b`);
  const walk = (dir: string): string | undefined => {
    for (const entry of fs.readdirSync(dir, { withFileTypes: true })) {
      const p = path.join(dir, entry.name);
      if (HARNESS.some((h) => p.startsWith(h))) continue;
      if (entry.isDirectory()) {
        const found = walk(p);
        if (found) return found;
      } else if (entry.name.endsWith('.ts') && !entry.name.endsWith('.test.ts') && re.test(fs.readFileSync(p, 'utf8'))) {
        return p;
      }
    }
    return undefined;
  };
  return walk(path.join(ROOT, 'src')) ?? walk(path.join(ROOT, 'bench'));
}
