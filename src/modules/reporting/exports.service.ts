import { registerValueFormats } from '../../platform/http/schemas.ts';
import { Value } from '@sinclair/typebox/value';
import type { ReportingConfig } from '../../platform/config.ts';
import type { TenantActorContext } from '../../platform/http/actor.ts';
import { newId } from '../../platform/ids.ts';
import type { EventPublisher } from '../../platform/outbox/publisher.ts';
import type { ObjectStorage } from '../../platform/storage/index.ts';
import type { Audit } from '../audit/index.ts';
import { CONTENT_TYPES, type ExportFormat } from './export-format.ts';
import { EXPORT_SOURCES } from './export-sources.repo.ts';
import type { ExportCheckpoint, ExportRow, ExportsRepo, ExportStatus } from './exports.repo.ts';
import { exportNotFound, invalidFilters, resourceForbidden } from './reporting.errors.ts';
import { REPORTING_EVENTS, type ExportRequestedPayload } from './reporting.events.ts';

export interface ExportView {
  id: string;
  resource: string;
  format: ExportFormat;
  filters: Record<string, unknown>;
  status: ExportStatus;
  rowsDone: number;
  rowsTotal: number | null;
  /** 0–100; null while the total is unknown. */
  progress: number | null;
  bytes: number | null;
  error: { code: string; detail: string } | null;
  download: { url: string; expiresAt: Date } | null;
  createdAt: Date;
  startedAt: Date | null;
  finishedAt: Date | null;
  expiresAt: Date | null;
}

export interface CreateExportInput {
  resource: string;
  format: ExportFormat;
  filters?: Record<string, unknown>;
}

export interface ExportsServiceDeps {
  repo: ExportsRepo;
  storage: ObjectStorage;
  events: EventPublisher;
  audit: Audit;
  config: ReportingConfig;
}

export function createExportsService(deps: ExportsServiceDeps) {
  const { repo } = deps;

  async function view(row: ExportRow): Promise<ExportView> {
    const status = row.status as ExportStatus;
    let download: ExportView['download'] = null;
    if (status === 'succeeded' && row.storage_key && row.expires_at) {
      const remaining = Math.floor((new Date(row.expires_at).getTime() - Date.now()) / 1000);
      const ttl = Math.min(deps.config.exportLinkTtlSec, remaining);
      if (ttl > 0) {
        const format = row.format as ExportFormat;
        const url = await deps.storage.signedUrl(row.storage_key, {
          expiresInSec: ttl,
          filename: `${row.resource}-${row.id}.${format}`,
          contentType: CONTENT_TYPES[format],
        });
        download = { url, expiresAt: new Date(Date.now() + ttl * 1000) };
      }
    }
    const rowsDone = Number(row.rows_done);
    const rowsTotal = row.rows_total === null ? null : Number(row.rows_total);
    const progress = status === 'succeeded' ? 100 : rowsTotal ? Math.min(99, Math.floor((rowsDone * 100) / rowsTotal)) : status === 'queued' ? 0 : null;
    return {
      id: row.id,
      resource: row.resource,
      format: row.format as ExportFormat,
      filters: row.filters as Record<string, unknown>,
      status,
      rowsDone,
      rowsTotal,
      progress,
      bytes: row.bytes === null ? null : Number(row.bytes),
      error: row.error_code ? { code: row.error_code, detail: row.error_detail ?? '' } : null,
      download,
      createdAt: new Date(row.created_at),
      startedAt: row.started_at ? new Date(row.started_at) : null,
      finishedAt: row.finished_at ? new Date(row.finished_at) : null,
      expiresAt: row.expires_at ? new Date(row.expires_at) : null,
    };
  }

  return {
    /** Queues an export; the caller's permissions decide which resources it may export. */
    async create(ctx: TenantActorContext, permissions: ReadonlySet<string>, input: CreateExportInput): Promise<ExportView> {
      const source = EXPORT_SOURCES[input.resource];
      if (!source) throw invalidFilters(`Unknown resource "${input.resource}"`);
      if (!permissions.has(source.permission)) throw resourceForbidden(input.resource, source.permission);
      const filters = input.filters ?? {};
      registerValueFormats();
      if (!Value.Check(source.filters, filters)) {
        const first = [...Value.Errors(source.filters, filters)][0];
        throw invalidFilters(`filters${first?.path ?? ''}: ${first?.message ?? 'invalid'}`);
      }
      const requestedBy = ctx.actor.userId;
      if (!requestedBy) throw invalidFilters('An export needs a requesting user');
      const row = await repo.scope.withTenant(ctx.tenantId, async (trx) => {
        const id = newId();
        const created = await repo.insert(trx, { tenantId: ctx.tenantId, id, resource: input.resource, format: input.format, filters, requestedBy });
        await deps.audit.record(trx, {
          orgId: ctx.tenantId,
          action: 'reporting.export.create',
          target: { type: 'export', id },
          changes: { resource: input.resource, format: input.format, filters },
          context: ctx,
        });
        const payload: ExportRequestedPayload = { exportId: id };
        await deps.events.add(trx, { name: REPORTING_EVENTS.exportRequested, tenantId: ctx.tenantId, payload });
        return created;
      });
      return view(row);
    },

    async get(tenantId: string, id: string): Promise<ExportView> {
      const row = await repo.scope.withTenant(tenantId, (trx) => repo.find(trx, tenantId, id));
      if (!row) throw exportNotFound();
      return view(row);
    },

    /** Cancels a queued or running export; a finished one's file is deleted at once (status expired). */
    async cancel(ctx: TenantActorContext, id: string): Promise<ExportView> {
      const { row, deleteKey, upload } = await repo.scope.withTenant(ctx.tenantId, async (trx) => {
        const current = await repo.find(trx, ctx.tenantId, id);
        if (!current) throw exportNotFound();
        let after: ExportRow | undefined;
        if (current.status === 'succeeded') after = await repo.expire(trx, ctx.tenantId, id);
        else if (current.status === 'queued' || current.status === 'running') after = await repo.cancel(trx, ctx.tenantId, id);
        if (after) {
          await deps.audit.record(trx, {
            orgId: ctx.tenantId,
            action: 'reporting.export.cancel',
            target: { type: 'export', id },
            changes: { status: { from: current.status, to: after.status } },
            context: ctx,
          });
        }
        // A resumable upload left by a stopped worker is dropped (a running worker drops its own too).
        const upload = after?.status === 'cancelled' ? ((current.checkpoint as ExportCheckpoint | null)?.upload ?? null) : null;
        return { row: after ?? current, deleteKey: current.status === 'succeeded' ? current.storage_key : null, upload };
      });
      if (deleteKey) await deps.storage.delete(deleteKey);
      if (upload) await deps.storage.abortUpload(upload).catch(() => undefined);
      return view(row);
    },
  };
}

export type ExportsService = ReturnType<typeof createExportsService>;
