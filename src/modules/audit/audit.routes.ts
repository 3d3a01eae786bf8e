import { Type } from '@sinclair/typebox';
import { DEFAULT_PAGE_SIZE, pageQuery } from '../../platform/http/pagination.ts';
import { DateTime, Page, Uuid } from '../../platform/http/schemas.ts';
import type { App } from '../../platform/http/server.ts';
import type { AuditService } from './audit.service.ts';

export const AUDIT_READ = 'audit:read';

const AuditEventSchema = Type.Object(
  {
    id: Uuid(),
    seq: Type.Union([Type.Integer(), Type.Null()], { description: 'Position in the chain; null while the event is pending (not sequenced yet)' }),
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
    pdRef: Type.Union([Uuid(), Type.Null()], { description: 'Reference to the personal data (IP, e-mail addresses) kept outside the hashed record; the hash covers this reference. The values are merged into ip/changes while not erased.' }),
    prevHash: Type.Union([Type.String(), Type.Null()]),
    hash: Type.Union([Type.String(), Type.Null()]),
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
    pending: Type.Optional(
      Type.Union([Type.Literal('include'), Type.Literal('exclude')], {
        default: 'include',
        description: 'include (default): pending events (committed, not sequenced yet; seq/prevHash/hash null) come first; exclude: only the sequenced chain',
      }),
    ),
    ...pageQuery,
  },
  { additionalProperties: false },
);

type QueryIn = { action?: string; actorId?: string; targetType?: string; targetId?: string; from?: string; to?: string; pending?: 'include' | 'exclude'; cursor?: string; limit?: number };

export function auditRoutes(audit: AuditService): (app: App) => Promise<void> {
  return async (app: App) => {
    app.get(
      '/orgs/:orgId/audit-events',
      {
        config: { permission: AUDIT_READ },
        schema: {
          tags: ['audit'],
          summary: "List the org's audit events, newest first (pending ones first unless pending=exclude)",
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
          pending: q.pending !== 'exclude',
          from: q.from === undefined ? undefined : new Date(q.from),
          to: q.to === undefined ? undefined : new Date(q.to),
          limit: q.limit ?? DEFAULT_PAGE_SIZE,
        });
      },
    );
  };
}
