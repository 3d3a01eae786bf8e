import { tenantActorOf as actor } from '../../platform/http/actor.ts';
import { accessOf } from '../../platform/http/auth.ts';
import type { App } from '../../platform/http/server.ts';
import { PERMISSIONS } from '../tenancy/index.ts';
import type { ExportsService, CreateExportInput } from './exports.service.ts';
import type { ReportQuery as ReportQueryIn, ReportsService } from './reports.service.ts';
import { CreateExportBody, ExportParams, ExportSchema, OrgParams, ReportParams, ReportQuery, ReportSchema } from './reporting.schemas.ts';

export const EXPORTS_MANAGE = PERMISSIONS.exportsManage;
export const REPORTS_READ = PERMISSIONS.reportsRead;

export function reportingRoutes(deps: { exports: ExportsService; reports: ReportsService }): (app: App) => Promise<void> {
  return async (app: App) => {
    app.post(
      '/orgs/:orgId/exports',
      {
        config: { permission: EXPORTS_MANAGE },
        schema: {
          tags: ['reporting'],
          summary: 'Start an export (CSV or NDJSON); poll it for progress and the download link',
          description:
            'Queued and run by a worker (one running export per org). Exporting a resource also needs its read permission (tasks/projects: projects:read, members: members:read, audit-events: audit:read). Honours Idempotency-Key.',
          security: [{ bearer: [] }],
          params: OrgParams,
          body: CreateExportBody,
          response: { 202: ExportSchema },
        },
      },
      async (request, reply) => {
        const created = await deps.exports.create(actor(request), accessOf(request).permissions, request.body as CreateExportInput);
        const { orgId } = request.params as { orgId: string };
        return reply.code(202).header('location', `/v1/orgs/${orgId}/exports/${created.id}`).send(created);
      },
    );

    app.get(
      '/orgs/:orgId/exports/:exportId',
      {
        config: { permission: EXPORTS_MANAGE },
        schema: {
          tags: ['reporting'],
          summary: "An export's status, progress and, once ready, a signed expiring download link",
          security: [{ bearer: [] }],
          params: ExportParams,
          response: { 200: ExportSchema },
        },
      },
      async (request) => {
        const { orgId, exportId } = request.params as { orgId: string; exportId: string };
        return deps.exports.get(orgId, exportId);
      },
    );

    app.delete(
      '/orgs/:orgId/exports/:exportId',
      {
        config: { permission: EXPORTS_MANAGE },
        schema: {
          tags: ['reporting'],
          summary: 'Cancel a queued or running export (a finished one: delete its file now)',
          security: [{ bearer: [] }],
          params: ExportParams,
          response: { 200: ExportSchema },
        },
      },
      async (request) => {
        const { exportId } = request.params as { exportId: string };
        return deps.exports.cancel(actor(request), exportId);
      },
    );

    app.get(
      '/orgs/:orgId/reports/:name',
      {
        config: { permission: REPORTS_READ },
        schema: {
          tags: ['reporting'],
          summary: 'A report from the read models: project-tasks (needs projectId) or active-members',
          security: [{ bearer: [] }],
          params: ReportParams,
          querystring: ReportQuery,
          response: { 200: ReportSchema },
        },
      },
      async (request) => {
        const { orgId, name } = request.params as { orgId: string; name: string };
        return deps.reports.get(orgId, name, request.query as ReportQueryIn);
      },
    );
  };
}
