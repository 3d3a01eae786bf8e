import { isUuid } from '../ids.ts';

/**
 * The in-memory half of cost attribution (tenant-costs.ts flushes it): sums per organization since the
 * last flush, one meter per database handle. Free of database imports, so the database layer itself can
 * meter the time spent inside each org's tenant transactions.
 */
export interface Sums {
  requests: number;
  requestMs: number;
  dbMs: number;
  jobs: number;
  jobMs: number;
}

export interface CostMeter {
  request(orgId: string, ms: number): void;
  db(orgId: string, ms: number): void;
  job(orgId: string, ms: number): void;
  /** The sums since the last call, and a fresh start. */
  take(): Map<string, Sums>;
  /** Adds back sums a failed flush could not write. */
  addBack(batch: Map<string, Sums>): void;
}

export function createCostMeter(): CostMeter {
  let sums = new Map<string, Sums>();
  const of = (orgId: string): Sums | undefined => {
    if (!isUuid(orgId)) return undefined;
    let s = sums.get(orgId);
    if (!s) sums.set(orgId, (s = { requests: 0, requestMs: 0, dbMs: 0, jobs: 0, jobMs: 0 }));
    return s;
  };
  return {
    request(orgId, ms) {
      const s = of(orgId);
      if (!s) return;
      s.requests += 1;
      s.requestMs += ms;
    },
    db(orgId, ms) {
      const s = of(orgId);
      if (s) s.dbMs += ms;
    },
    job(orgId, ms) {
      const s = of(orgId);
      if (!s) return;
      s.jobs += 1;
      s.jobMs += ms;
    },
    take() {
      const taken = sums;
      sums = new Map();
      return taken;
    },
    addBack(batch) {
      for (const [org, b] of batch) {
        const s = of(org)!;
        s.requests += b.requests;
        s.requestMs += b.requestMs;
        s.dbMs += b.dbMs;
        s.jobs += b.jobs;
        s.jobMs += b.jobMs;
      }
    },
  };
}

/** Wraps a tenant-transaction runner so the time spent inside each org's transactions is counted. */
export function meteredTenantRunner<R extends (tenantId: string, fn: never) => Promise<unknown>>(run: R, meter: CostMeter): R {
  return (async (tenantId: string, fn: never) => {
    const started = performance.now();
    try {
      return await run(tenantId, fn);
    } finally {
      meter.db(tenantId, performance.now() - started);
    }
  }) as R;
}
