import type { EventEnvelope } from './publisher.ts';

/** One unit of work: an event for one consumer (fan-out makes one per subscribed consumer). */
export interface DeliveryJob {
  deliveryId: string;
  consumer: string;
  event: EventEnvelope;
}

/** What the processor asks of the transport after a run: nothing (done or dead), or run it again later. */
export interface ProcessOutcome {
  retryAfterMs?: number;
}

/**
 * Runs a batch of deliveries (in one transaction per tenant when every handler succeeds) and returns one
 * outcome per job, in the same order.
 */
export type Processor = (jobs: DeliveryJob[]) => Promise<ProcessOutcome[]>;

/**
 * How long a consumer's jobs wait before being taken (0: not held): a bulk run holding `background`
 * consumers back (JobRegistry.holdBackground). Their jobs stay queued, in order, and nothing is retried.
 */
export type HeldFor = (consumer: string) => number;

/** Deliveries a transport hands to the processor at once (one BullMQ job, one in-process run). */
export const PROCESS_BATCH = 100;

export interface QueueView {
  consumer: string;
  waiting: number;
  active: number;
  delayed: number;
}

/**
 * Moves delivery jobs from the relay to processors. It is not the system of record: Postgres is, and the
 * sweeper re-dispatches anything a transport loses. Dispatching a job that is already queued is a no-op.
 */
export interface Transport {
  readonly kind: 'in-process' | 'bullmq';
  dispatch(jobs: DeliveryJob[]): Promise<void>;
  /**
   * Dispatches jobs the sweeper found unprocessed: unlike dispatch, it repairs a queue whose entry for a job
   * was lost while the job's own record survived (re-adding the same id would silently do nothing).
   */
  redispatch(jobs: DeliveryJob[]): Promise<void>;
  /** Starts processing the named consumers' jobs. */
  start(consumers: string[], processor: Processor): Promise<void>;
  /** Stops taking jobs and waits for the active ones to finish (graceful shutdown). */
  stop(): Promise<void>;
  /** Releases connections. */
  close(): Promise<void>;
  inspect(consumers: string[]): Promise<QueueView[]>;
}
