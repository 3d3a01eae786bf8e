import type { FastifyRequest } from 'fastify';
import type { Transaction } from 'kysely';
import { asPlugin, type ModuleRoutes } from '../../platform/http/module-routes.ts';
import type { Database } from '../../platform/db/database.ts';
import { auditRoutes } from './audit.routes.ts';
import {
  recordAuditEvent,
  verifyAllChains,
  verifyChain,
  type AuditContext,
  type AuditEventInput,
  type ChainReport,
} from './audit.service.ts';

export { AUDIT_READ } from './audit.routes.ts';
export { PLATFORM_AUDIT_TENANT } from './audit.service.ts';
export type { AuditActor, AuditContext, AuditEvent, AuditEventInput, ChainReport } from './audit.service.ts';

export interface Audit {
  /** Append an event in the caller's transaction (which runs in `event.orgId`'s tenant context). */
  record(trx: Transaction<any>, event: AuditEventInput): Promise<{ id: string; seq: number; hash: string }>;
  /** Operator check of one chain, or of every chain (runs as the owner role). */
  verify(orgId?: string): Promise<ChainReport[]>;
  routes: ModuleRoutes;
}

export function createAudit(deps: { db: Database }): Audit {
  return {
    record: recordAuditEvent,
    async verify(orgId) {
      return orgId ? [await verifyChain(deps.db.owner, orgId)] : verifyAllChains(deps.db.owner);
    },
    routes: { name: 'audit', prefix: '/v1', plugin: asPlugin(auditRoutes(deps.db)) },
  };
}

/** The actor and request metadata of an authenticated request, for audit.record(). */
export function auditContextFrom(request: FastifyRequest): AuditContext {
  const p = request.principal;
  const actor = !p
    ? { type: 'system' as const, id: 'anonymous', userId: null }
    : p.kind === 'api_key'
      ? { type: 'api_key' as const, id: p.apiKeyId!, userId: p.userId }
      : { type: 'user' as const, id: p.userId, userId: p.userId };
  return { actor, requestId: request.id, ip: request.ip };
}
export { runAuditCommand } from './audit.cli.ts';
