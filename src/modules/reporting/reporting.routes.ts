import { tenantActorOf as actor } from '../../platform/http/actor.ts';
import { accessOf, PLATFORM_ADMIN } from '../../platform/http/auth.ts';
import type { App } from '../../platform/http/server.ts';
import { PERMISSIONS } from '../tenancy/index.ts';
import type { ExportsService, CreateExportInput } from './exports.service.ts';
import type { ReportQuery as ReportQueryIn, ReportsService } from './reports.service.ts';
import { billingReportCsv, type BillingReport, type BillingReportQuery as BillingReportQueryIn, type BillingReports } from './billing-reports.service.ts';
import {
  AdminBillingReportParams,
  BillingReportParams,
  BillingReportQuery,
  BillingReportSchema,
  CreateExportBody,
  ExportParams,
  ExportSchema,
  OrgParams,
  ReportParams,
  ReportQuery,
  ReportSchema,
} from './reporting.schemas.ts';
import type { FastifyReply } from 'fastify';

export const EXPORTS_MANAGE = PERMISSIONS.exportsManage;
export const REPORTS_READ = PERMISSIONS.reportsRead;

export const BILLING_READ = PERMISSIONS.billingRead;

/** JSON, or with `format=csv` the rows as a CSV attachment. */
function sendBillingReport(reply: FastifyReply, r: BillingReport, format: string | undefined) {
  if (format !== 'csv') return r;
  const file = `billing-${r.name}-${r.from.toISOString().slice(0, 10)}-${r.to.toISOString().slice(0, 10)}.csv`;
  return reply.type('text/csv; charset=utf-8').header('content-disposition', `attachment; filename="${file}"`).send(billingReportCsv(r));
}

export function reportingRoutes(deps: { exports: ExportsService; reports: ReportsService; billing: BillingReports }): (app: App) => Promise<void> {
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

    const billingQuery = (q: unknown) => q as BillingReportQueryIn & { format?: string };
    app.get(
      '/orgs/:orgId/reports/billing/:report',
      {
        config: { permission: BILLING_READ },
        schema: {
          tags: ['reporting'],
          summary: "The org's own billing: mrr (MRR/ARR and new/expansion/contraction/churned movements per month), churn, subscriptions, trial-conversion, usage",
          description: 'Months are UTC calendar months on the org\'s billing clock (its test clock when it has one). Money in minor units, per currency. `format=csv` returns the rows as CSV.',
          security: [{ bearer: [] }],
          params: BillingReportParams,
          querystring: BillingReportQuery,
          response: { 200: BillingReportSchema },
        },
      },
      async (request, reply) => {
        const { orgId, report } = request.params as { orgId: string; report: string };
        const q = billingQuery(request.query);
        return sendBillingReport(reply, await deps.billing.forOrg(orgId, report, q), q.format);
      },
    );

    app.get(
      '/admin/reports/billing/:report',
      {
        config: { permission: PLATFORM_ADMIN },
        schema: {
          tags: ['reporting'],
          summary: 'Business metrics across every org (platform admins): mrr, churn, subscriptions, trial-conversion, usage',
          description: 'Per currency, never summed across currencies. `format=csv` returns the rows as CSV.',
          security: [{ bearer: [] }],
          params: AdminBillingReportParams,
          querystring: BillingReportQuery,
          response: { 200: BillingReportSchema },
        },
      },
      async (request, reply) => {
        const { report } = request.params as { report: string };
        const q = billingQuery(request.query);
        return sendBillingReport(reply, await deps.billing.forPlatform(report, q), q.format);
      },
    );
  };
}
