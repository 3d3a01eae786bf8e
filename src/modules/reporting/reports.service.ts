import type { ReportsRepo } from './reports.repo.ts';
import { invalidRange, unknownReport } from './reporting.errors.ts';

export const REPORT_NAMES = ['project-tasks', 'active-members'] as const;
export type ReportName = (typeof REPORT_NAMES)[number];

export interface ReportQuery {
  from?: string;
  to?: string;
  projectId?: string;
}

export interface ProjectTasksReport {
  name: 'project-tasks';
  from: Date;
  to: Date;
  projectId: string;
  weeks: Array<{ week: string; created: number; completed: number }>;
  openByStatus: Record<string, number>;
  overdue: number;
  medianCycleTimeHours: number | null;
  completedInRange: number;
}

export interface ActiveMembersReport {
  name: 'active-members';
  from: Date;
  to: Date;
  activeMembers: number;
  weeks: Array<{ week: string; activeMembers: number }>;
}

export type Report = ProjectTasksReport | ActiveMembersReport;

const DAY = 86_400_000;
const MAX_RANGE_DAYS = 731;

export interface ReportsServiceDeps {
  repo: ReportsRepo;
  /** projects' facade: a report of a project the org does not have is a 404, like every other lookup. */
  getProject(tenantId: string, projectId: string): Promise<unknown>;
  now?: () => Date;
}

/** Reports answer from the read models (on a replica when one is in rotation), never from the OLTP tables. */
export function createReportsService(deps: ReportsServiceDeps) {
  const now = deps.now ?? (() => new Date());

  function range(q: ReportQuery): { from: Date; to: Date } {
    // Default: up to the end of today (UTC), so repeated reads of the same day answer the same range.
    const to = q.to ? new Date(q.to) : new Date(Math.floor(now().getTime() / DAY) * DAY + DAY);
    const from = q.from ? new Date(q.from) : new Date(to.getTime() - 12 * 7 * DAY);
    if (!(from < to)) throw invalidRange('from must be before to');
    if (to.getTime() - from.getTime() > MAX_RANGE_DAYS * DAY) throw invalidRange(`The range may span at most ${MAX_RANGE_DAYS} days`);
    return { from, to };
  }

  return {
    async get(tenantId: string, name: string, q: ReportQuery): Promise<Report> {
      if (!(REPORT_NAMES as readonly string[]).includes(name)) throw unknownReport(name);
      const { from, to } = range(q);
      const { repo } = deps;
      if (name === 'active-members') {
        const r = await repo.scope.withTenantRead(tenantId, (trx) => repo.activeMembers(trx, tenantId, from, to));
        return { name, from, to, activeMembers: r.total, weeks: r.weeks };
      }
      if (!q.projectId) throw invalidRange('The project-tasks report needs projectId');
      const projectId = q.projectId;
      await deps.getProject(tenantId, projectId);
      const today = now().toISOString().slice(0, 10);
      return repo.scope.withTenantRead(tenantId, async (trx) => {
        const weeks = (await repo.weeks(trx, tenantId, projectId, from, to)).rows.map((w) => ({ week: w.week, created: Number(w.created), completed: Number(w.completed) }));
        const cycle = await repo.medianCycleHours(trx, tenantId, projectId, from, to);
        return {
          name: 'project-tasks' as const,
          from,
          to,
          projectId,
          weeks,
          openByStatus: await repo.openByStatus(trx, tenantId, projectId),
          overdue: await repo.overdue(trx, tenantId, projectId, today),
          medianCycleTimeHours: cycle.median,
          completedInRange: cycle.count,
        };
      });
    },
  };
}

export type ReportsService = ReturnType<typeof createReportsService>;
