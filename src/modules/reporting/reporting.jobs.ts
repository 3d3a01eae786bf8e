import type { Logger } from 'pino';
import type { DbScope } from '../../platform/db/database.ts';
import type { JobRegistry } from '../../platform/outbox/registry.ts';
import type { ObjectStorage } from '../../platform/storage/index.ts';
import type { Mailer } from '../notifications/index.ts';
import { PROJECT_EVENTS, type CommentAddedPayload, type TaskCreatedPayload, type TaskUpdatedPayload } from '../projects/index.ts';
import { CONTENT_TYPES } from './export-format.ts';
import { storageKeyOf, type ExportRunner } from './exports.runner.ts';
import type { ExportsRepo } from './exports.repo.ts';
import type { ReportsRepo, ReportsTables } from './reports.repo.ts';
import { EXPORT_EMAIL, REPORTING_EVENTS, type ExportEmailPayload } from './reporting.events.ts';

export interface ReportingJobsDeps {
  runner: ExportRunner;
  exportsRepo: ExportsRepo;
  reports: ReportsRepo;
  scope: DbScope<ReportsTables>;
  storage: ObjectStorage;
  mailer: Mailer;
  linkTtlSec: number;
  logger: Logger;
  /** How often workers look for queued exports besides the nudge of each new one (default 5 s). */
  pollEveryMs?: number;
  retentionEveryMs?: number;
}

/** Export runner nudges and schedules, retention, read-model maintenance, the "export ready" e-mail. */
export function registerReportingJobs(jobs: JobRegistry, deps: ReportingJobsDeps): void {
  // Not awaited: the runner claims in its own transactions, after this handler's commits.
  jobs.subscribe(REPORTING_EVENTS.exportRequested, 'reporting.exports.kick', async () => {
    void deps.runner.kick();
  });
  jobs.schedule('reporting.exports.poll', { everyMs: deps.pollEveryMs ?? 5_000 }, async () => {
    await deps.runner.kick();
  });
  jobs.schedule('reporting.exports.retention', { everyMs: deps.retentionEveryMs ?? 600_000 }, async ({ logger }) => {
    const n = await deleteExpiredExports(deps);
    if (n > 0) logger.info({ deleted: n }, 'expired export files deleted');
  });

  // Read models, in the handler's transaction (exactly once per event, with the processed-event record; those
  // writes are their only effects, so they are batch-safe: a batch shares one transaction without savepoints).
  const readModel = { batchSafe: true };
  jobs.subscribe<TaskCreatedPayload>(PROJECT_EVENTS.taskCreated, 'reporting.read_models.task_created', async (event, { trx }) => {
    if (!event.tenantId) return;
    const t = deps.scope.join(trx);
    const at = new Date(event.occurredAt);
    const p = event.payload;
    await deps.reports.taskCreated(t, event.tenantId, { taskId: p.taskId, projectId: p.projectId, status: p.status, dueDate: p.dueDate ?? null, at });
    await deps.reports.memberActive(t, event.tenantId, p.actorId, at);
  }, readModel);
  jobs.subscribe<TaskUpdatedPayload>(PROJECT_EVENTS.taskUpdated, 'reporting.read_models.task_updated', async (event, { trx }) => {
    if (!event.tenantId) return;
    const t = deps.scope.join(trx);
    const at = new Date(event.occurredAt);
    const c = event.payload.changes;
    const status = typeof c.status === 'string' ? c.status : undefined;
    const dueDate = 'dueDate' in c ? ((c.dueDate as string | null) ?? null) : undefined;
    if (status !== undefined || dueDate !== undefined) await deps.reports.taskChanged(t, event.tenantId, { taskId: event.payload.taskId, status, dueDate, at });
    await deps.reports.memberActive(t, event.tenantId, event.payload.actorId, at);
  }, readModel);
  jobs.subscribe<CommentAddedPayload>(PROJECT_EVENTS.commentAdded, 'reporting.read_models.comment_added', async (event, { trx }) => {
    if (!event.tenantId) return;
    await deps.reports.memberActive(deps.scope.join(trx), event.tenantId, event.payload.authorId, new Date(event.occurredAt));
  }, readModel);

  // "Your export is ready": queued by the runner with the export_ready event; durable, retried, and its
  // Message-ID is the event id (a retried send is recognisably the same message).
  jobs.subscribe<ExportEmailPayload>(
    EXPORT_EMAIL,
    'reporting.export_email',
    async (event) => {
      if (!event.tenantId) return;
      const p = event.payload;
      const lines = [`Your export of ${p.resource} (${p.rows} rows) is ready.`, ''];
      const url = await deps.storage.signedUrl(storageKeyOf(event.tenantId, p.exportId, p.format), {
        expiresInSec: deps.linkTtlSec,
        filename: `${p.resource}-${p.exportId}.${p.format}`,
        contentType: CONTENT_TYPES[p.format],
      });
      lines.push(`Download it (the link works for ${Math.round(deps.linkTtlSec / 60)} minutes): ${url}`);
      lines.push(`The file is deleted at ${p.expiresAt}; a fresh link is on the export (GET /v1/orgs/${event.tenantId}/exports/${p.exportId}).`);
      await deps.mailer.send({ to: p.email, subject: 'Your Plinth export is ready', text: lines.join('\n'), messageId: event.id, tenantId: event.tenantId });
    },
    { maxAttempts: 8, backoffBaseMs: 10_000, backoffMaxMs: 3_600_000 },
  );
}

/** Retention: files of finished exports past expires_at are deleted, the export marked expired. */
export async function deleteExpiredExports(deps: Pick<ReportingJobsDeps, 'exportsRepo' | 'storage'>): Promise<number> {
  const repo = deps.exportsRepo;
  let n = 0;
  for (;;) {
    const batch = await repo.expired(100);
    for (const e of batch) {
      if (e.storage_key) await deps.storage.delete(e.storage_key);
      await repo.scope.withTenant(e.tenant_id, (trx) => repo.expire(trx, e.tenant_id, e.export_id));
      n++;
    }
    if (batch.length < 100) return n;
  }
}
