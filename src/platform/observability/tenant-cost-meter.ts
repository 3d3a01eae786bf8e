import { isUuid } from '../ids.ts';
import { createIntervalCounter } from './interval-counter.ts';

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
  /** Writes the sums since the last flush with `write` (tenant-costs.ts); a failed batch is kept and written again next time. */
  flush(write: (sums: Map<string, Sums>) => Promise<void>): Promise<number>;
}

const FIELDS = ['requests', 'requestMs', 'dbMs', 'jobs', 'jobMs'] as const;

export function createCostMeter(): CostMeter {
  // The writer is the flush's argument (the database layer builds the meter before tenant-costs exists).
  let writer: ((sums: Map<string, Sums>) => Promise<void>) | undefined;
  const counter = createIntervalCounter<keyof Sums>({
    fields: FIELDS,
    write: async (batch) => {
      if (!writer) throw new Error('cost meter flushed without a writer');
      await writer(batch.counts);
    },
  });
  return {
    request(orgId, ms) {
      if (isUuid(orgId)) counter.add(orgId, { requests: 1, requestMs: ms });
    },
    db(orgId, ms) {
      if (isUuid(orgId)) counter.add(orgId, { dbMs: ms });
    },
    job(orgId, ms) {
      if (isUuid(orgId)) counter.add(orgId, { jobs: 1, jobMs: ms });
    },
    async flush(write) {
      writer = write;
      return counter.flush();
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
