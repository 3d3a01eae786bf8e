import fs from 'node:fs';
import os from 'node:os';

/**
 * Lowers this process's CPU priority to `nice` (the worker role: WORKER_NICE). On Linux nice is per thread:
 * every thread that exists now (V8's and libuv's helpers) is set, and threads started later inherit it from
 * the thread that starts them. Returns the threads set; a failure is reported, never fatal.
 */
export function yieldCpu(nice: number, logger: { warn(obj: object, msg: string): void }): number {
  if (nice === 0) return 0;
  let threads = [0];
  try {
    threads = fs.readdirSync('/proc/self/task').map(Number);
  } catch {
    // Not Linux: the process-wide call is all there is.
  }
  let set = 0;
  for (const tid of threads) {
    try {
      os.setPriority(tid, nice);
      set++;
    } catch (err) {
      // A thread that ended meanwhile is gone, not a failure; anything else is worth a line.
      if ((err as NodeJS.ErrnoException).code !== 'ESRCH') logger.warn({ err, nice }, "could not lower the worker's CPU priority");
    }
  }
  return set;
}
