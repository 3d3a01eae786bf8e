import { Type } from '@sinclair/typebox';
import type { Database } from '../../platform/db/database.ts';
import { Page, Uuid } from '../../platform/http/schemas.ts';
import type { App } from '../../platform/http/server.ts';
import { listAuditEvents } from './audit.service.ts';

export const AUDIT_READ = 'audit:read';

const AuditEventSchema = Type.Object(
  {
    id: Uuid(),
    seq: Type.Integer(),
    occurredAt: Type.String({ format: 'date-time' }),
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
    cursor: Type.Optional(Type.String({ maxLength: 200 })),
    limit: Type.Optional(Type.Integer({ minimum: 1, maximum: 100, default: 50 })),
  },
  { additionalProperties: false },
);

export function auditRoutes(db: Database): (app: App) => Promise<void> {
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
        const page = await listAuditEvents(db, orgId, request.query as Record<string, any>);
        return { data: page.data.map((e) => ({ ...e, occurredAt: e.occurredAt.toISOString() }) as any), nextCursor: page.nextCursor };
      },
    );
  };
}
