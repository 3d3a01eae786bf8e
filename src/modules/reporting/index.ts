import type { Logger } from 'pino';
import type { ReportingConfig } from '../../platform/config.ts';
import type { Database } from '../../platform/db/database.ts';
import { asPlugin } from '../../platform/http/module-routes.ts';
import type { ModuleSurface } from '../../platform/module.ts';
import type { EventPublisher } from '../../platform/outbox/publisher.ts';
import type { ObjectStorage } from '../../platform/storage/index.ts';
import type { Audit } from '../audit/index.ts';
import type { Mailer } from '../notifications/index.ts';
import { createExportRunner, type ExportRunner } from './exports.runner.ts';
import { createExportsRepo } from './exports.repo.ts';
import { createExportsService, type ExportsService } from './exports.service.ts';
import { allOrgIds, createReportsRepo, rebuildOrg } from './reports.repo.ts';
import { createReportsService, type ReportsService } from './reports.service.ts';
import type { RebuildReport } from './reporting.cli.ts';
import { deleteExpiredExports, registerReportingJobs } from './reporting.jobs.ts';
import { reportingRoutes } from './reporting.routes.ts';
import { PLATFORM_AUDIT_TENANT } from '../audit/index.ts';
import { createBillingReports, type BillingReports } from './billing-reports.service.ts';
import { SOURCE_TABLE_NAMES } from './export-sources.repo.ts';

export { REPORTING_EVENTS, type ExportReadyPayload } from './reporting.events.ts';
export { EXPORTS_MANAGE, REPORTS_READ } from './reporting.routes.ts';
export type { BillingReport, BillingReports } from './billing-reports.service.ts';
export { EXPORT_SOURCES, type ExportSource } from './export-sources.repo.ts';
export { neutralizeCell } from './export-format.ts';
export { runReportsCommand, type RebuildReport } from './reporting.cli.ts';
export type { ExportView, CreateExportInput, ExportsService } from './exports.service.ts';
export type { Report, ReportsService } from './reports.service.ts';

export interface ReportingDeps {
  db: Database;
  events: EventPublisher;
  audit: Audit;
  logger: Logger;
  storage: ObjectStorage;
  /** config.reporting */
  config: ReportingConfig;
  mailer: Mailer;
  /** projects' facade: a report of an unknown project is a 404. */
  getProject(tenantId: string, projectId: string): Promise<unknown>;
  /** identity's facade: the requester's e-mail address. */
  getUserEmail(userId: string): Promise<string | null>;
  /** Test-only tuning of the runner (batch retries, lease) and schedules. */
  tuning?: { batchAttempts?: number; leaseMs?: number; pollEveryMs?: number; retentionEveryMs?: number };
}

/** Exports (streamed files with signed links) and reports from event-maintained read models. */
export interface Reporting extends ModuleSurface {
  exports: ExportsService;
  reports: ReportsService;
  /** Billing reports (MRR and movements, churn, subscriptions by plan, trial conversion, usage): an org's own, or the platform's. */
  billingReports: BillingReports;
  /** The worker-side export runner (kick: claim now; drain: wait until idle; close: stop, hand jobs back). */
  runner: ExportRunner;
  /** Recomputes read models from the source tables (one org, or all) and reports drift. */
  rebuild(orgId?: string): Promise<RebuildReport[]>;
  /** Retention now (the schedule runs it every 10 minutes). */
  deleteExpired(): Promise<number>;
  close(): Promise<void>;
}

export function createReporting(deps: ReportingDeps): Reporting {
  const exportsRepo = createExportsRepo(deps.db.scope('reporting_exports', 'reporting_export_jobs'));
  const reportsScope = deps.db.scope('reporting_task_facts', 'reporting_project_weeks', 'reporting_member_days');
  const reportsRepo = createReportsRepo(reportsScope);
  const sources = deps.db.scope(...SOURCE_TABLE_NAMES);
  const rebuildScope = deps.db.scope('reporting_task_facts', 'reporting_project_weeks', 'reporting_member_days', 'tasks', 'audit_events', 'audit_chains');
  const exportsService = createExportsService({ repo: exportsRepo, storage: deps.storage, events: deps.events, audit: deps.audit, config: deps.config });
  const reports = createReportsService({ repo: reportsRepo, getProject: deps.getProject });
  const billingScope = deps.db.scope('billing_subscriptions', 'billing_charges', 'billing_prices', 'billing_plans', 'billing_test_clocks', 'billing_usage_rollups', 'billing_schedule');
  const billingReports = createBillingReports({
    scope: billingScope,
    // Orgs with a live subscription (billing_schedule) and every org with an audit chain (one row per org, not
    // under RLS; every billing change is audited and the sequencer chains it within seconds): no tenant table
    // is scanned to find them.
    allOrgIds: async () => {
      const live = await billingScope.app.selectFrom('billing_schedule').select('tenant_id').execute();
      const chained = await rebuildScope.app.selectFrom('audit_chains').select('tenant_id').execute();
      return [...new Set([...live, ...chained].map((r) => r.tenant_id))].filter((id) => id !== PLATFORM_AUDIT_TENANT).sort();
    },
  });
  const runner = createExportRunner({
    repo: exportsRepo,
    sources,
    storage: deps.storage,
    events: deps.events,
    logger: deps.logger,
    config: deps.config,
    getUserEmail: deps.getUserEmail,
    batchAttempts: deps.tuning?.batchAttempts,
    leaseMs: deps.tuning?.leaseMs,
    // COPY on Postgres; PGlite has no COPY to a client, so there the batches are rendered by SQL.
    render: deps.db.kind === 'postgres' ? 'copy' : 'postgres',
  });
  return {
    name: 'reporting',
    exports: exportsService,
    reports,
    billingReports,
    runner,
    async rebuild(orgId) {
      const orgs = orgId ? [orgId] : await allOrgIds(rebuildScope.owner);
      const out: RebuildReport[] = [];
      for (const id of orgs) out.push({ orgId: id, drift: await rebuildScope.withTenant(id, (trx) => rebuildOrg(trx, id)) });
      return out;
    },
    deleteExpired: () => deleteExpiredExports({ exportsRepo, storage: deps.storage }),
    close: () => runner.close(),
    routes: [{ name: 'reporting', prefix: '/v1', plugin: asPlugin(reportingRoutes({ exports: exportsService, reports, billing: billingReports })) }],
    registerJobs(jobs) {
      registerReportingJobs(jobs, {
        runner,
        exportsRepo,
        reports: reportsRepo,
        scope: reportsScope,
        storage: deps.storage,
        mailer: deps.mailer,
        linkTtlSec: deps.config.exportLinkTtlSec,
        logger: deps.logger,
        pollEveryMs: deps.tuning?.pollEveryMs,
        retentionEveryMs: deps.tuning?.retentionEveryMs,
      });
    },
  };
}
