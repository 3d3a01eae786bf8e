import { Type } from '@sinclair/typebox';
import { DateTime, Uuid } from '../../platform/http/schemas.ts';
import { EXPORT_SOURCES } from './export-sources.repo.ts';
import { REPORT_NAMES } from './reports.service.ts';

const Nullable = <T extends ReturnType<typeof Type.Integer>>(t: T) => Type.Union([t, Type.Null()]);

export const ExportSchema = Type.Object(
  {
    id: Uuid(),
    resource: Type.String(),
    format: Type.Unsafe<string>({ type: 'string', enum: ['csv', 'ndjson'] }),
    filters: Type.Record(Type.String(), Type.Unknown()),
    status: Type.Unsafe<string>({ type: 'string', enum: ['queued', 'running', 'succeeded', 'failed', 'cancelled', 'expired'] }),
    rowsDone: Type.Integer(),
    rowsTotal: Nullable(Type.Integer({ description: 'Counted when the export starts; null when unknown' })),
    progress: Nullable(Type.Integer({ minimum: 0, maximum: 100 })),
    bytes: Nullable(Type.Integer()),
    error: Type.Union([Type.Object({ code: Type.String(), detail: Type.String() }, { additionalProperties: false }), Type.Null()]),
    download: Type.Union([
      Type.Object(
        {
          url: Type.String({ description: 'Signed link: works without a token until expiresAt' }),
          expiresAt: DateTime(),
        },
        { additionalProperties: false },
      ),
      Type.Null(),
    ]),
    createdAt: DateTime(),
    startedAt: Type.Union([DateTime(), Type.Null()]),
    finishedAt: Type.Union([DateTime(), Type.Null()]),
    expiresAt: Type.Union([DateTime(), Type.Null()], { description: 'When the file is deleted (retention)' }),
  },
  { additionalProperties: false },
);

export const CreateExportBody = Type.Object(
  {
    resource: Type.Unsafe<string>({ type: 'string', enum: Object.keys(EXPORT_SOURCES), description: 'What to export' }),
    format: Type.Unsafe<'csv' | 'ndjson'>({ type: 'string', enum: ['csv', 'ndjson'] }),
    filters: Type.Optional(
      Type.Record(Type.String({ maxLength: 50 }), Type.Unknown(), {
        maxProperties: 10,
        description: 'Per resource — tasks: projectId, status[]; projects: archived; members: role; audit-events: from, to, action, afterSeq; invoices: status[], from, to (billing period start); usage: metric, from, to (hours)',
      }),
    ),
  },
  { additionalProperties: false },
);

export const ExportParams = Type.Object({ orgId: Uuid(), exportId: Uuid() });
export const OrgParams = Type.Object({ orgId: Uuid() });

export const ReportParams = Type.Object({
  orgId: Uuid(),
  name: Type.Unsafe<string>({ type: 'string', enum: [...REPORT_NAMES] }),
});

export const ReportQuery = Type.Object(
  {
    from: Type.Optional(Type.String({ format: 'date-time', description: 'Inclusive (default: 12 weeks before to)' })),
    to: Type.Optional(Type.String({ format: 'date-time', description: 'Exclusive (default: tomorrow)' })),
    projectId: Type.Optional(Uuid('project-tasks: the project')),
  },
  { additionalProperties: false },
);

const Week = Type.String({ description: 'Monday of the ISO week (UTC), YYYY-MM-DD' });

export const ReportSchema = Type.Union([
  Type.Object(
    {
      name: Type.Literal('project-tasks'),
      from: DateTime(),
      to: DateTime(),
      projectId: Uuid(),
      weeks: Type.Array(Type.Object({ week: Week, created: Type.Integer(), completed: Type.Integer() }, { additionalProperties: false })),
      openByStatus: Type.Record(Type.String(), Type.Integer()),
      overdue: Type.Integer(),
      medianCycleTimeHours: Type.Union([Type.Number(), Type.Null()]),
      completedInRange: Type.Integer(),
    },
    { additionalProperties: false },
  ),
  Type.Object(
    {
      name: Type.Literal('active-members'),
      from: DateTime(),
      to: DateTime(),
      activeMembers: Type.Integer(),
      weeks: Type.Array(Type.Object({ week: Week, activeMembers: Type.Integer() }, { additionalProperties: false })),
    },
    { additionalProperties: false },
  ),
]);

export const BillingReportParams = Type.Object(
  { orgId: Uuid(), report: Type.Union(['mrr', 'churn', 'subscriptions', 'trial-conversion', 'usage'].map((n) => Type.Literal(n))) },
  { additionalProperties: false },
);
export const AdminBillingReportParams = Type.Object({ report: BillingReportParams.properties.report }, { additionalProperties: false });

export const BillingReportQuery = Type.Object(
  {
    from: Type.Optional(Type.String({ format: 'date-time', description: 'Inclusive (default: 12 months before to)' })),
    to: Type.Optional(Type.String({ format: 'date-time', description: "Exclusive (default: the start of next month, by the org's clock)" })),
    format: Type.Optional(Type.Union([Type.Literal('json'), Type.Literal('csv')], { default: 'json', description: 'csv: the rows as a spreadsheet-safe CSV file' })),
  },
  { additionalProperties: false },
);

export const BillingReportSchema = Type.Object(
  {
    name: Type.String(),
    scope: Type.Union([Type.Literal('org'), Type.Literal('platform')]),
    from: DateTime(),
    to: DateTime(),
    columns: Type.Array(Type.String()),
    rows: Type.Array(Type.Record(Type.String(), Type.Union([Type.String(), Type.Integer(), Type.Null()])), {
      description: 'Money in minor units of the row\'s currency (never summed across currencies); rates as decimal strings',
    }),
  },
  { additionalProperties: false },
);
