import { Type } from '@sinclair/typebox';
import { DEFAULT_PAGE_SIZE, pageQuery } from '../../platform/http/pagination.ts';
import { DateTime, Page, Uuid } from '../../platform/http/schemas.ts';
import type { App } from '../../platform/http/server.ts';
import type { AuditService } from './audit.service.ts';

export const AUDIT_READ = 'audit:read';

const AuditEventSchema = Type.Object(
  {
    id: Uuid(),
    seq: Type.Integer(),
    occurredAt: DateTime(),
    actor: Type.Object({
      type: Type.Union([Type.Literal('user'), Type.Literal('api_key'), Type.Literal('system')]),
      id: Type.String(),
      userId: Type.Union([Uuid(), Type.Null()]),
    }),
    action: Type.String(),
    target: Type.Object({ type: Type.String(), id: Type.String() }),
    requestId: Type.Union([Type.String(), Type.Null()]),
    ip: Type.Union([Type.String(), Type.Null()]),
    changes: Type.Record(Type.String(), Type.Unknown()),
    prevHash: Type.String(),
    hash: Type.String(),
  },
  { additionalProperties: false },
);

const Query = Type.Object(
  {
    action: Type.Optional(Type.String({ minLength: 1, maxLength: 100 })),
    actorId: Type.Optional(Type.String({ minLength: 1, maxLength: 100, description: 'User or API key id' })),
    targetType: Type.Optional(Type.String({ minLength: 1, maxLength: 100 })),
    targetId: Type.Optional(Type.String({ minLength: 1, maxLength: 100 })),
    from: Type.Optional(Type.String({ format: 'date-time', description: 'Inclusive lower bound' })),
    to: Type.Optional(Type.String({ format: 'date-time', description: 'Exclusive upper bound' })),
    ...pageQuery,
  },
  { additionalProperties: false },
);

type QueryIn = { action?: string; actorId?: string; targetType?: string; targetId?: string; from?: string; to?: string; cursor?: string; limit?: number };

export function auditRoutes(audit: AuditService): (app: App) => Promise<void> {
  return async (app: App) => {
    app.get(
      '/orgs/:orgId/audit-events',
      {
        config: { permission: AUDIT_READ },
        schema: {
          tags: ['audit'],
          summary: "List the org's audit events, newest first",
          security: [{ bearer: [] }],
          params: Type.Object({ orgId: Uuid() }),
          querystring: Query,
          response: { 200: Page(AuditEventSchema) },
        },
      },
      async (request) => {
        const { orgId } = request.params as { orgId: string };
        const q = request.query as QueryIn;
        return audit.list(orgId, {
          ...q,
          from: q.from === undefined ? undefined : new Date(q.from),
          to: q.to === undefined ? undefined : new Date(q.to),
          limit: q.limit ?? DEFAULT_PAGE_SIZE,
        });
      },
    );
  };
}
