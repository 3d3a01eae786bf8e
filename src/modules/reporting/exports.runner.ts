import { once } from 'node:events';
import type { Logger } from 'pino';
import type { DbScope } from '../../platform/db/database.ts';
import type { ReportingConfig } from '../../platform/config.ts';
import type { EventPublisher } from '../../platform/outbox/publisher.ts';
import type { ObjectStorage } from '../../platform/storage/index.ts';
import { CONTENT_TYPES, createSerializer, type ExportFormat } from './export-format.ts';
import { EXPORT_SOURCES, type Row, type SourceTables } from './export-sources.repo.ts';
import type { ExportsRepo } from './exports.repo.ts';
import { REPORTING_ERRORS } from './reporting.errors.ts';
import { EXPORT_EMAIL, REPORTING_EVENTS, type ExportEmailPayload, type ExportReadyPayload } from './reporting.events.ts';

export interface ExportRunnerDeps {
  repo: ExportsRepo;
  sources: DbScope<SourceTables>;
  storage: ObjectStorage;
  events: EventPublisher;
  logger: Logger;
  config: ReportingConfig;
  /** identity's facade: the requester's address for the "export ready" e-mail (null: no e-mail). */
  getUserEmail(userId: string): Promise<string | null>;
  /** Batch reads tried this often (backoff between) before the export fails. */
  batchAttempts?: number;
  /** A crashed worker's export is claimed again after this; renewed at every batch. */
  leaseMs?: number;
}

class Cancelled extends Error {}

export const storageKeyOf = (tenantId: string, id: string, format: ExportFormat) => `exports/${tenantId}/${id}.${format === 'csv' ? 'csv' : 'ndjson'}`;

/**
 * Runs exports in a worker process: claims jobs (one running export per org, a global limit), streams
 * keyset batches from a READ ONLY transaction each (on a replica when configured, with the export's own
 * statement_timeout) through the serializer into the storage port, never holding more than one batch.
 * A failed batch read is retried from the last key written; a worker that dies leaves a lease that
 * expires, and another worker starts the export again.
 */
export function createExportRunner(deps: ExportRunnerDeps) {
  const { repo, config } = deps;
  const leaseMs = deps.leaseMs ?? 60_000;
  const attempts = deps.batchAttempts ?? 4;
  const running = new Map<string, { abort: AbortController; done: Promise<void> }>();
  let kicking: Promise<void> | undefined;
  let again = false;
  let closed = false;

  async function readBatch(tenantId: string, resource: string, filters: unknown, after: string | null): Promise<Row[]> {
    const source = EXPORT_SOURCES[resource]!;
    for (let attempt = 1; ; attempt++) {
      try {
        return await deps.sources.withTenantRead(tenantId, (trx) => source.readBatch(trx, tenantId, filters as never, after, config.exportBatchRows), {
          readOnly: true,
          statementTimeoutMs: config.exportStatementTimeoutMs,
        });
      } catch (err) {
        if (attempt >= attempts) throw err;
        deps.logger.warn({ err, attempt, resource }, 'export batch failed; retrying from the last key');
        await new Promise((r) => setTimeout(r, Math.min(5_000, 100 * 2 ** attempt) * (0.5 + Math.random() / 2)));
      }
    }
  }

  async function run(job: { exportId: string; tenantId: string; attempts: number }, abort: AbortController): Promise<void> {
    const { exportId: id, tenantId } = job;
    const current = await repo.scope.withTenant(tenantId, (trx) => repo.find(trx, tenantId, id));
    if (!current || !['queued', 'running'].includes(current.status)) return repo.releaseJob(id);
    const source = EXPORT_SOURCES[current.resource];
    const format = current.format as ExportFormat;
    const filters = current.filters as Record<string, unknown>;
    const log = deps.logger.child({ exportId: id, tenantId, resource: current.resource });
    if (!source || job.attempts > 3) {
      await repo.scope.withTenant(tenantId, async (trx) => {
        await repo.start(trx, tenantId, id, job.attempts, null);
        await repo.fail(trx, tenantId, id, REPORTING_ERRORS.exportFailed, source ? 'The export failed repeatedly' : 'Unknown resource');
      });
      return;
    }
    const total = await deps.sources
      .withTenantRead(tenantId, (trx) => source.count(trx, tenantId, filters as never), { readOnly: true, statementTimeoutMs: config.exportStatementTimeoutMs })
      .catch(() => null);
    const started = await repo.scope.withTenant(tenantId, (trx) => repo.start(trx, tenantId, id, job.attempts, total));
    if (!started) return repo.releaseJob(id);

    const key = storageKeyOf(tenantId, id, format);
    const serializer = createSerializer(format, source.columns);
    const upload = deps.storage.put(key, serializer, { contentType: CONTENT_TYPES[format], signal: abort.signal });
    // A storage failure ends a wait on backpressure. (Not Promise.race with a pending promise: every race
    // would stay attached to it, holding its batch, and the export would retain every row it wrote.)
    let uploadError: unknown;
    const uploadDone = new AbortController();
    upload.catch((err: unknown) => {
      uploadError = err;
      uploadDone.abort(err);
    });
    let rows = 0;
    try {
      let after: string | null = null;
      for (;;) {
        if (abort.signal.aborted) throw new Cancelled();
        const batch: Row[] = await readBatch(tenantId, current.resource, filters, after);
        if (uploadError) throw uploadError;
        for (const row of batch) {
          if (!serializer.write(row)) await once(serializer, 'drain', { signal: uploadDone.signal });
        }
        rows += batch.length;
        if (batch.length > 0) after = String(batch[batch.length - 1]!.id);
        const still = await repo.scope.withTenant(tenantId, async (trx) => {
          await repo.renewLease(trx, id, leaseMs);
          return repo.progress(trx, tenantId, id, rows);
        });
        if (!still) throw new Cancelled();
        if (batch.length < config.exportBatchRows) break;
      }
      serializer.end();
      const { bytes } = await upload;
      const expiresAt = new Date(Date.now() + config.exportRetentionHours * 3_600_000);
      const email = await deps.getUserEmail(current.requested_by).catch(() => null);
      const done = await repo.scope.withTenant(tenantId, async (trx) => {
        const row = await repo.succeed(trx, tenantId, id, { rows, bytes, storageKey: key, expiresAt });
        if (row) {
          const payload: ExportReadyPayload = { exportId: id, resource: row.resource, format, rows, bytes, expiresAt: expiresAt.toISOString(), requestedBy: row.requested_by };
          await deps.events.add(trx, { name: REPORTING_EVENTS.exportReady, tenantId, payload });
          if (email) {
            const mail: ExportEmailPayload = { exportId: id, email, resource: row.resource, format, rows, expiresAt: payload.expiresAt };
            await deps.events.add(trx, { name: EXPORT_EMAIL, tenantId, payload: mail });
          }
        }
        return row;
      });
      // Cancelled between the last batch and now: the file is not wanted.
      if (!done) {
        await deps.storage.delete(key).catch(() => undefined);
        await repo.releaseJob(id);
      }
      log.info({ rows, bytes }, 'export ready');
    } catch (err) {
      const cancelled = err instanceof Cancelled || abort.signal.reason instanceof Cancelled;
      abort.abort(cancelled ? new Cancelled() : err);
      serializer.destroy();
      await upload.catch(() => undefined);
      await deps.storage.delete(key).catch(() => undefined);
      if (cancelled) {
        if (closed) {
          // Shutdown: hand the job back; another worker (or this one after restart) starts it again.
          await repo.requeue(id);
          return;
        }
        await repo.releaseJob(id);
        log.info({ rows }, 'export cancelled');
        return;
      }
      const timeout = /statement timeout/i.test(String((err as Error)?.message));
      log.error({ err, rows }, 'export failed');
      await repo.scope.withTenant(tenantId, (trx) =>
        repo.fail(
          trx,
          tenantId,
          id,
          timeout ? REPORTING_ERRORS.exportTimeout : REPORTING_ERRORS.exportFailed,
          timeout ? `A batch took longer than ${config.exportStatementTimeoutMs} ms; narrow the filters or retry later` : 'The export failed; try again later',
        ),
      );
    }
  }

  async function fill(): Promise<void> {
    do {
      again = false;
      while (!closed && running.size < config.exportGlobalConcurrency) {
        const job = await repo.claim(config.exportGlobalConcurrency, leaseMs);
        if (!job) break;
        const abort = new AbortController();
        const done = run(job, abort)
          .catch((err: unknown) => deps.logger.error({ err, exportId: job.exportId }, 'export runner error'))
          .finally(() => {
            running.delete(job.exportId);
            if (!closed) void kick();
          });
        running.set(job.exportId, { abort, done });
      }
    } while (again && !closed);
  }

  function kick(): Promise<void> {
    if (closed) return Promise.resolve();
    if (kicking) {
      again = true;
      return kicking;
    }
    kicking = fill()
      .catch((err: unknown) => deps.logger.warn({ err }, 'export claim failed'))
      .finally(() => {
        kicking = undefined;
      });
    return kicking;
  }

  return {
    kick,
    /** Until no export is running or being claimed (tests, shutdown). */
    async drain(): Promise<void> {
      while (kicking || running.size > 0) {
        await kicking;
        await Promise.all([...running.values()].map((r) => r.done));
      }
    },
    running: () => [...running.keys()],
    async close(): Promise<void> {
      closed = true;
      for (const r of running.values()) r.abort.abort(new Cancelled());
      await Promise.all([...running.values()].map((r) => r.done));
    },
  };
}

export type ExportRunner = ReturnType<typeof createExportRunner>;
