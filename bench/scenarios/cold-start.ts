import { apiCommand, ensureCompiledBuild, type ApiRuntime } from '../lib/build.ts';
import { startNode } from '../lib/processes.ts';
import { round } from '../lib/stats.ts';
import { target, type BenchContext, type Scenario } from '../lib/types.ts';

const ROUNDS = 3;

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length === 0 ? NaN : s[Math.floor(s.length / 2)]!;
};

/** One start of an API instance as production starts one: spawn → first 200 of /readyz, and its RSS then. */
async function startOnce(ctx: BenchContext, runtime: ApiRuntime, i: number): Promise<{ ms: number; rssMb: number }> {
  const child = await startNode({
    name: `cold-start-${runtime}-${i}`,
    ...apiCommand(runtime),
    // An API instance (no worker role) on the already migrated database, as a rolling deploy starts one.
    env: { ...ctx.apiEnv, PLINTH_ROLE: 'api', MIGRATE_ON_START: 'false', SHUTDOWN_DELAY_MS: '0', SHUTDOWN_GRACE_MS: '2000' },
    readyPath: '/readyz',
    readyTimeoutMs: 60_000,
    pollMs: 10,
  });
  try {
    return { ms: child.readyMs, rssMb: child.rssMb() };
  } finally {
    await child.stop('SIGTERM', 5_000);
  }
}

/**
 * Cold start of the API, compiled (`node dist/src/cli.js start`, as the image runs it) and from the sources
 * through tsx: median of 3 starts each, alternating, with no other bench load running.
 */
export const coldStart: Scenario = {
  name: 'cold-start',
  title: 'API cold start (spawn → /readyz 200), compiled dist/ vs tsx',
  async run(ctx) {
    const p7 = (s?: number) => [target('P7', 'production cold start (compiled, spawn → ready) < 1.5 s', s, 1.5, 's', '<')];
    // The run built dist/ unless it benches the sources (--api tsx): then only a current dist/ is timed.
    const compiled = await ensureCompiledBuild({ build: false }).then(
      () => true,
      () => false,
    );
    const runs: Record<ApiRuntime, { ms: number; rssMb: number }[]> = { dist: [], tsx: [] };
    for (let i = 0; i < ROUNDS; i++) {
      if (compiled) runs.dist.push(await startOnce(ctx, 'dist', i));
      runs.tsx.push(await startOnce(ctx, 'tsx', i));
    }
    const ms = (r: ApiRuntime) => median(runs[r].map((x) => x.ms));
    const rss = (r: ApiRuntime) => median(runs[r].map((x) => x.rssMb));
    const metrics: Record<string, number | string> = {
      rounds: ROUNDS,
      tsxMs: ms('tsx'),
      tsxRssAtReadyMb: rss('tsx'),
      tsxAllMs: runs.tsx.map((x) => x.ms).join(' '),
    };
    if (compiled) {
      Object.assign(metrics, { compiledMs: ms('dist'), compiledRssAtReadyMb: rss('dist'), compiledAllMs: runs.dist.map((x) => x.ms).join(' ') });
    }
    return {
      name: this.name,
      title: this.title,
      status: 'ok',
      endpoint: compiled ? `compiled ${ms('dist')} ms (${rss('dist')} MB) · tsx ${ms('tsx')} ms (${rss('tsx')} MB)` : `tsx ${ms('tsx')} ms; no current dist/ build to compare (npm run build)`,
      metrics,
      targets: p7(compiled ? round(ms('dist') / 1000, 2) : undefined),
    };
  },
};
