import type { Logger } from 'pino';
import type { DbScope } from '../../platform/db/database.ts';
import type { ReportingConfig } from '../../platform/config.ts';
import type { EventPublisher } from '../../platform/outbox/publisher.ts';
import type { ObjectStorage, UploadState } from '../../platform/storage/index.ts';
import { CONTENT_TYPES, serializeBatch, type ExportFormat } from './export-format.ts';
import { canCopy, copyBatch, EXPORT_SOURCES, readRows, renderBatch, type Row, type SourceTables } from './export-sources.repo.ts';
import type { ExportCheckpoint, ExportsRepo } from './exports.repo.ts';
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
  /**
   * Where a batch is serialized: 'copy' (Postgres: `COPY (SELECT …) TO STDOUT`, the database writes the
   * batch's CSV/NDJSON; what index.ts uses on Postgres), 'postgres' (default, and PGlite's: the database
   * renders each batch as one text value with SQL expressions) or 'node' (rows read as objects and
   * serialized here). Sources marked `render: 'node'` are always serialized here; a source COPY cannot
   * take a cursor from (`canCopy`) is rendered.
   */
  render?: 'copy' | 'postgres' | 'node';
}

/** One keyset batch: written by Postgres (`body`) or as rows to serialize here (`data`). */
interface Batch {
  rows: number;
  /** The cursor after this batch (the previous one when it is empty). */
  after: string | null;
  /** The batch's bytes, in one or more buffers. */
  body: Buffer[] | null;
  data: Row[] | null;
}

/** A part being uploaded, with the cursor and row count it ends at (its checkpoint once uploaded). */
interface Uploading {
  after: string | null;
  rows: number;
  done: Promise<UploadState>;
  /** Set when the upload has succeeded. */
  state: UploadState | undefined;
}

/** Claims of one export (each a worker that died or stalled with it) before it fails for good. */
const MAX_CLAIMS = 5;
/** Rows serialized between two yields to the event loop (about a millisecond of work). */
const SERIALIZE_SLICE = 500;

class Cancelled extends Error {}
/** This worker's claim was superseded (its lease expired while it stalled): another worker continues the export. */
class Fenced extends Error {}

export const storageKeyOf = (tenantId: string, id: string, format: ExportFormat) => `exports/${tenantId}/${id}.${format === 'csv' ? 'csv' : 'ndjson'}`;

/**
 * Runs exports in a worker process: claims jobs (one running export per org, a global limit), streams
 * keyset batches from a READ ONLY transaction each (on a replica when configured, with the export's own
 * statement_timeout), serializes each batch and uploads it in parts through the storage port's resumable
 * upload, holding at most two batches and two parts (one uploading while the batches read meanwhile fill the
 * next: reads and uploads overlap). Every part uploaded is checkpointed in the export (keyset
 * cursor, rows, bytes, upload state): a failed batch read is retried from the last key, and a worker that
 * dies leaves a lease that expires, after which another worker continues from the checkpoint — the final
 * file has every row exactly once, as if the export had never stopped.
 */
export function createExportRunner(deps: ExportRunnerDeps) {
  const { repo, config } = deps;
  const leaseMs = deps.leaseMs ?? config.exportLeaseMs;
  const attempts = deps.batchAttempts ?? 4;
  const running = new Map<string, { abort: AbortController; done: Promise<void> }>();
  let kicking: Promise<void> | undefined;
  let again = false;
  let closed = false;

  async function readBatch(tenantId: string, resource: string, format: ExportFormat, filters: unknown, after: string | null): Promise<Batch> {
    const source = EXPORT_SOURCES[resource]!;
    const mode = deps.render === 'node' || source.render === 'node' ? 'node' : deps.render === 'copy' && canCopy(source, format) ? 'copy' : 'postgres';
    const read = async (trx: Parameters<Parameters<typeof deps.sources.withTenantRead>[1]>[0]): Promise<Batch> => {
      const inner = source.select(trx, tenantId, filters as never, after, config.exportBatchRows);
      if (mode === 'node') {
        const data = await readRows(trx, source, inner);
        return { rows: data.length, after: data.length > 0 ? source.cursorOf(data[data.length - 1]!) : after, body: null, data };
      }
      if (mode === 'copy') {
        const r = await copyBatch(trx, source, format, inner);
        return { rows: r.rows, after: r.after ?? after, body: r.body, data: null };
      }
      const r = await renderBatch(trx, source, format, inner);
      return { rows: r.rows, after: r.after ?? after, body: [Buffer.from(r.body)], data: null };
    };
    for (let attempt = 1; ; attempt++) {
      try {
        return await deps.sources.withTenantRead(tenantId, read, { readOnly: true, serial: true, statementTimeoutMs: config.exportStatementTimeoutMs });
      } catch (err) {
        if (attempt >= attempts) throw err;
        deps.logger.warn({ err, attempt, resource }, 'export batch failed; retrying from the last key');
        await new Promise((r) => setTimeout(r, Math.min(5_000, 100 * 2 ** attempt) * (0.5 + Math.random() / 2)));
      }
    }
  }

  async function run(job: { exportId: string; tenantId: string; attempts: number }, abort: AbortController): Promise<void> {
    const { exportId: id, tenantId, attempts: claim } = job;
    const current = await repo.scope.withTenant(tenantId, (trx) => repo.find(trx, tenantId, id));
    if (!current || !['queued', 'running'].includes(current.status)) return repo.releaseJob(id);
    const source = EXPORT_SOURCES[current.resource];
    const format = current.format as ExportFormat;
    const filters = current.filters as Record<string, unknown>;
    const log = deps.logger.child({ exportId: id, tenantId, resource: current.resource });
    if (!source || claim > MAX_CLAIMS) {
      const cp = current.checkpoint as ExportCheckpoint | null;
      if (cp) await deps.storage.abortUpload(cp.upload).catch(() => undefined);
      await repo.scope.withTenant(tenantId, async (trx) => {
        await repo.start(trx, tenantId, id, claim, null);
        await repo.fail(trx, tenantId, id, REPORTING_ERRORS.exportFailed, source ? 'The export failed repeatedly' : 'Unknown resource');
      });
      return;
    }
    const total = await deps.sources
      .withTenantRead(tenantId, (trx) => source.count(trx, tenantId, filters as never), { readOnly: true, serial: true, statementTimeoutMs: config.exportStatementTimeoutMs })
      .catch(() => null);
    const started = await repo.scope.withTenant(tenantId, (trx) => repo.start(trx, tenantId, id, claim, total));
    if (!started) return repo.releaseJob(id);

    const key = storageKeyOf(tenantId, id, format);
    const partBytes = Math.max(config.exportPartBytes, deps.storage.minPartBytes);
    // Resume from the checkpoint (the last part uploaded, and the key of its last row), or begin the upload.
    let cp = started.checkpoint as ExportCheckpoint | null;
    let upload: UploadState | undefined = cp?.upload;
    let ended: 'done' | 'fenced' | undefined;
    let rows = cp?.rows ?? 0;
    let after: string | null = cp?.after ?? null;
    if (cp) log.info({ rows, bytes: cp.bytes, attempt: claim }, 'export resumes from its checkpoint');
    let next: Promise<Batch> | undefined;
    let uploading: Uploading | undefined;
    /** Waits for a part's upload to end; the upload state after it, and the part's checkpoint. */
    const settle = async (part: Uploading): Promise<ExportCheckpoint> => {
      upload = part.state ?? (await part.done);
      uploading = undefined;
      return { after: part.after, rows: part.rows, bytes: upload.bytes, upload };
    };
    // The lease is renewed on a timer too, not only with progress: a slow batch or upload on a busy machine
    // must not make the export look abandoned.
    const renew = setInterval(() => {
      repo.renewLease(repo.scope.app, id, claim, leaseMs).catch((err: unknown) => log.warn({ err }, 'export lease renewal failed'));
    }, leaseMs / 3);
    renew.unref();
    try {
      if (!upload) {
        upload = await deps.storage.beginUpload(key, { contentType: CONTENT_TYPES[format] });
        cp = { after: null, rows: 0, bytes: 0, upload };
        const r = await repo.scope.withTenant(tenantId, (trx) => repo.progress(trx, tenantId, id, claim, 0, cp!));
        if (r !== 'ok') throw r === 'fenced' ? new Fenced() : new Cancelled();
      }
      let header = format === 'csv' && upload.bytes === 0;
      let pending: Buffer[] = [];
      let pendingBytes = 0;
      let lastWrite = Date.now();
      const paceFrom = Date.now();
      const paceRows = rows;
      // One batch is read ahead while the previous one is serialized and uploaded (two batches in memory).
      next = readBatch(tenantId, current.resource, format, filters, after);
      for (;;) {
        if (abort.signal.aborted) throw abort.signal.reason instanceof Fenced ? abort.signal.reason : new Cancelled();
        const batch = await next!;
        next = undefined;
        const last = batch.rows < config.exportBatchRows;
        after = batch.after;
        // EXPORT_MAX_ROWS_PER_SEC: the next batch's read starts no sooner than this pace allows (the average
        // over the run; a batch itself goes at the backend's speed).
        if (!last && config.exportMaxRowsPerSec > 0) {
          const wait = paceFrom + ((rows + batch.rows - paceRows) / config.exportMaxRowsPerSec) * 1000 - Date.now();
          if (wait > 0) await new Promise((r) => setTimeout(r, wait));
        }
        if (!last) {
          next = readBatch(tenantId, current.resource, format, filters, after);
          next.catch(() => undefined); // awaited next turn; a failure there is handled there
        }
        if (header) {
          const bytes = serializeBatch(format, source.columns, [], true);
          header = false;
          pending.push(bytes);
          pendingBytes += bytes.length;
        }
        for (const bytes of batch.body ?? []) {
          if (bytes.length === 0) continue;
          pending.push(bytes);
          pendingBytes += bytes.length;
        }
        // Rows serialized here: in slices with a turn of the event loop between them, so in a process that
        // also serves the API, requests run between slices instead of waiting behind a whole batch.
        const data = batch.data ?? [];
        for (let i = 0; i < data.length; i += SERIALIZE_SLICE) {
          if (i > 0) await new Promise((r) => setImmediate(r));
          const bytes = serializeBatch(format, source.columns, data.slice(i, i + SERIALIZE_SLICE), false);
          pending.push(bytes);
          pendingBytes += bytes.length;
        }
        rows += batch.rows;
        let checkpoint: ExportCheckpoint | undefined;
        // The part uploaded before this one, once done (now, or waited for when the next part is ready or at
        // the end): its checkpoint is written below, in this loop, so checkpoints are written in part order.
        if (uploading && (uploading.state || pendingBytes >= partBytes || last)) checkpoint = await settle(uploading);
        if (pendingBytes >= partBytes || (last && pendingBytes > 0)) {
          // Uploaded while the next batches are read (one part in flight, one filling: at most two parts and
          // the batch read ahead in memory). The batches' buffers as they are, no copy into one part buffer.
          const part: Uploading = { after, rows, done: deps.storage.uploadPart(upload, pending), state: undefined };
          part.done.then((state) => (part.state = state)).catch(() => undefined); // awaited above or on failure below
          uploading = part;
          pending = [];
          pendingBytes = 0;
          if (last) checkpoint = await settle(part);
        }
        // Progress (and the lease) at every checkpoint, or once a second (well within the lease): cancellation
        // is noticed that soon.
        if (checkpoint || last || Date.now() - lastWrite >= Math.min(1_000, leaseMs / 4)) {
          lastWrite = Date.now();
          const r = await repo.scope.withTenant(tenantId, async (trx) => {
            await repo.renewLease(trx, id, claim, leaseMs);
            return repo.progress(trx, tenantId, id, claim, rows, checkpoint);
          });
          if (r !== 'ok') throw r === 'fenced' ? new Fenced() : new Cancelled();
        }
        if (last) break;
      }
      const { bytes } = await deps.storage.completeUpload(upload);
      clearInterval(renew);
      ended = 'done';
      const expiresAt = new Date(Date.now() + config.exportRetentionHours * 3_600_000);
      const email = await deps.getUserEmail(current.requested_by).catch(() => null);
      const done = await repo.scope.withTenant(tenantId, async (trx) => {
        const row = await repo.succeed(trx, tenantId, id, { rows, bytes, storageKey: key, expiresAt, attempts: claim });
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
      clearInterval(renew);
      await next?.catch(() => undefined);
      // No write to the upload may follow what is decided below (abort, requeue, hand-over).
      await uploading?.done.catch(() => undefined);
      if (err instanceof Fenced || abort.signal.reason instanceof Fenced) {
        // Another worker owns the export (and its upload) now: touch nothing.
        log.warn({ rows }, 'export taken over by another worker; stopping');
        return;
      }
      const cancelled = err instanceof Cancelled || abort.signal.reason instanceof Cancelled;
      if (cancelled && closed) {
        // Shutdown: hand the job back with its checkpoint and upload intact; the next worker continues.
        await repo.requeue(id);
        return;
      }
      if (upload && ended !== 'done') await deps.storage.abortUpload(upload).catch(() => undefined);
      await deps.storage.delete(key).catch(() => undefined);
      if (cancelled) {
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
          claim,
        ),
      );
    }
  }

  async function fill(): Promise<void> {
    do {
      again = false;
      while (!closed && running.size < config.exportGlobalConcurrency) {
        // Never its own running exports (a lease that lapsed while this process was stalled is renewed, not re-run).
        const job = await repo.claim(config.exportGlobalConcurrency, leaseMs, [...running.keys()]);
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
