import type { JobRegistry } from '../../platform/outbox/registry.ts';

/** How often the sequencer runs: a committed event is in its chain within about this long plus one tick. */
export const SEQUENCE_EVERY_MS = 1_000;

/**
 * The sequencer, on a schedule: each occurrence is claimed by one worker, and an occurrence that overlaps
 * a still-running one (another worker) is harmless — chains are sequenced under their head's row lock
 * and a chain held by another run is skipped (audit.repo.ts, sequenceChain).
 */
export function registerAuditJobs(jobs: JobRegistry, sequence: () => Promise<{ chains: number; sequenced: number }>): void {
  jobs.schedule('audit.sequence', { everyMs: SEQUENCE_EVERY_MS }, async ({ logger }) => {
    const { chains, sequenced } = await sequence();
    if (sequenced > 0) logger.debug({ chains, sequenced }, 'audit events sequenced');
  });
}
