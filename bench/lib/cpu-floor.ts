import pg from 'pg';
import { runLoad, type LoadResult } from './load.ts';
import { round } from './stats.ts';

/**
 * Background work burns CPU; on this 2-core machine the loads beside it feel that whatever the work is. The
 * floor: the same paced loads while Postgres burns `cores` of CPU doing nothing else (a PL/pgSQL busy loop,
 * duty-cycled every 100 ms, on as many connections as whole cores it takes). The work under test cannot do
 * better than the floor at the CPU it needs, so a target below the floor at that CPU is a property of the
 * machine, not of the code.
 */
export async function startPostgresBurner(databaseUrl: string, cores: number): Promise<() => Promise<void>> {
  if (cores <= 0) return async () => {};
  const n = Math.max(1, Math.ceil(cores));
  const busyMs = Math.round((cores / n) * 100);
  let stop = false;
  const clients = await Promise.all(
    Array.from({ length: n }, async () => {
      const c = new pg.Client({ connectionString: databaseUrl });
      await c.connect();
      return c;
    }),
  );
  // A number of our own, inlined (a DO block takes no parameters).
  const burn = `do $$ declare t timestamptz := clock_timestamp(); begin while clock_timestamp() < t + interval '${busyMs} milliseconds' loop end loop; end $$`;
  const loops = clients.map(async (c) => {
    for (let tick = Date.now(); !stop; ) {
      await c.query(burn);
      tick += 100;
      const wait = tick - Date.now();
      if (wait > 0) await new Promise((r) => setTimeout(r, wait));
      else tick = Date.now();
    }
  });
  return async () => {
    stop = true;
    await Promise.all(loops);
    await Promise.all(clients.map((c) => c.end()));
  };
}

type Shape = Parameters<typeof runLoad>[0];

/**
 * The loads' p99 with Postgres burning each of `coresList`, as ratios to `before` (the same loads' p99 without).
 * 0 cores is an A/A run: the same loads again with nothing beside them, the measure's own spread.
 */
export async function measureCpuFloor(
  databaseUrl: string,
  shapes: Shape[],
  before: LoadResult[],
  coresList: number[],
  p99: (r: LoadResult) => number = (r) => r.okLatencyMs.p99,
): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  for (const cores of coresList) {
    const stop = await startPostgresBurner(databaseUrl, cores);
    let during: LoadResult[];
    try {
      during = await Promise.all(shapes.map((s) => runLoad(s)));
    } finally {
      await stop();
    }
    out[cores === 0 ? 'again alone (A/A)' : `beside Postgres burning ${cores} core`] = during.map((d, i) => `${round(p99(d) / Math.max(0.01, p99(before[i]!)), 2)}×`).join(' / ');
  }
  return out;
}
