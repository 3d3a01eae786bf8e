import type { Api, Tenant } from './api.ts';
import type { BenchEnv } from './env.ts';
import type { LoadResult } from './load.ts';
import type { Child } from './processes.ts';

export type BaselineName = 'hello' | 'select' | 'insert' | 'pgbench';

export interface BaselineResult {
  name: BaselineName;
  title: string;
  status: 'ok' | 'skipped' | 'error';
  reason?: string;
  /** Requests (or, for pgbench, transactions) per second. */
  okPerSec?: number;
  load?: LoadResult;
  rssMb?: number;
}

export interface TargetResult {
  id: string;
  description: string;
  /** Measured value, human readable (e.g. "0.71×", "183 ms"). */
  measured: string;
  threshold: string;
  /** null when the target could not be evaluated (feature or baseline missing). */
  pass: boolean | null;
}

export interface ScenarioResult {
  name: string;
  title: string;
  status: 'ok' | 'skipped' | 'error';
  reason?: string;
  /** Which endpoint the scenario ended up exercising (features land over time). */
  endpoint?: string;
  load?: LoadResult;
  /** Extra phases (e.g. burst: steady / burst / recovery) and scenario-specific numbers. */
  phases?: Record<string, LoadResult>;
  metrics?: Record<string, number | string>;
  baseline?: BaselineName;
  ratio?: number;
  targets: TargetResult[];
}

export interface BenchOptions {
  scenarios: string[];
  durationSec: number;
  connections: number;
  /** Opt-in: seed and measure 10^6 tasks (minutes of seeding). */
  large: boolean;
  /** The worker role in its own process (`--worker`); otherwise the API process runs both roles. */
  worker: boolean;
  baselines: boolean;
  outDir: string;
  /** The API under test: the compiled build from dist/ (default, as in production) or the sources through tsx. */
  api: 'dist' | 'tsx';
  /** Run `npm run build` before starting the compiled API (default); false only checks dist/ is current. */
  build: boolean;
  /** Run the API under `node --cpu-prof`, writing its profile into this directory when it stops. */
  cpuProfDir?: string;
}

export interface BenchContext {
  opts: BenchOptions;
  env: BenchEnv;
  api: Child;
  /** The worker process when started with `--worker`. */
  worker?: Child;
  /** The environment the API was started with (scenarios that start more instances reuse it). */
  apiEnv: Record<string, string>;
  client: Api;
  baselines: Partial<Record<BaselineName, BaselineResult>>;
  /** Shared fixtures, created on first use: one tenant, one project and some tasks. */
  fixtures: {
    tenant?: Tenant;
    projectId?: string;
    taskIds?: string[];
    /** Tasks in the fixture project (created + seeded). */
    taskCount?: number;
    /** Write targets of the create scenarios: projects spread over orgs, many projects in one org. */
    spread?: Array<{ tenant: Tenant; projectId: string }>;
    oneOrg?: Array<{ tenant: Tenant; projectId: string }>;
  };
  log(msg: string): void;
}

export interface Scenario {
  name: string;
  title: string;
  /** Baseline whose throughput this scenario is a ratio of. */
  baseline?: BaselineName;
  run(ctx: BenchContext): Promise<ScenarioResult>;
}

export function skipped(s: Pick<Scenario, 'name' | 'title'>, reason: string, targets: TargetResult[] = []): ScenarioResult {
  return { name: s.name, title: s.title, status: 'skipped', reason, targets };
}

export function target(id: string, description: string, measured: number | undefined, threshold: number, unit: '×' | 'ms' | 'MB' | '/s' | 's' | '%', cmp: '>=' | '<' | '<='): TargetResult {
  const fmt = (n: number) => (unit === '×' ? `${n.toFixed(2)}×` : `${Math.round(n * 10) / 10} ${unit}`);
  if (measured === undefined || Number.isNaN(measured)) {
    return { id, description, measured: 'n/a', threshold: `${cmp} ${fmt(threshold)}`, pass: null };
  }
  const pass = cmp === '>=' ? measured >= threshold : cmp === '<' ? measured < threshold : measured <= threshold;
  return { id, description, measured: fmt(measured), threshold: `${cmp} ${fmt(threshold)}`, pass };
}
