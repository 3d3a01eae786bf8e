import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';

/** In a child process (nice only goes up for an unprivileged process, so never in the test runner itself). */
describe.skipIf(!fs.existsSync('/proc/self/task'))('yieldCpu', () => {
  it('sets every thread of the process, and threads started afterwards inherit it', () => {
    const script = `
      import fs from 'node:fs';
      import os from 'node:os';
      import { Worker } from 'node:worker_threads';
      import { yieldCpu } from ${JSON.stringify(path.resolve('src/platform/cpu-priority.ts'))};
      const set = yieldCpu(7, console);
      const before = fs.readdirSync('/proc/self/task').map(Number);
      const w = new Worker('setInterval(() => {}, 1000)', { eval: true });
      await new Promise((r) => w.once('online', r));
      const all = fs.readdirSync('/proc/self/task').map(Number);
      console.log(JSON.stringify({ set, before: before.length, after: all.length, priorities: [...new Set(all.map((t) => os.getPriority(t)))] }));
      await w.terminate();
    `;
    const out = execFileSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], { encoding: 'utf8' });
    const r = JSON.parse(out.trim().split('\n').at(-1)!);
    expect(r.set).toBeGreaterThan(1);
    expect(r.after).toBeGreaterThan(r.before);
    expect(r.priorities).toEqual([7]);
  });

  it('nice 0 leaves the process alone', async () => {
    const { yieldCpu } = await import('./cpu-priority.ts');
    expect(yieldCpu(0, console)).toBe(0);
  });
});
