import type { Database, TxHandle } from '../../platform/db/database.ts';
import { asPlugin } from '../../platform/http/module-routes.ts';
import type { ModuleSurface } from '../../platform/module.ts';
import { registerAuditJobs } from './audit.jobs.ts';
import { createAuditRepo } from './audit.repo.ts';
import { auditRoutes } from './audit.routes.ts';
import { createAuditService, type AuditEvent, type AuditEventInput, type AuditFilter, type ChainReport } from './audit.service.ts';

export { AUDIT_READ } from './audit.routes.ts';
export { PLATFORM_AUDIT_TENANT } from './audit.service.ts';
export type { AuditEvent, AuditEventInput, AuditFilter, ChainReport } from './audit.service.ts';
export { runAuditCommand } from './audit.cli.ts';

export interface AuditDeps {
  db: Database;
}

/** Append-only, tamper-evident audit log: one hash chain per org, plus the platform chain. */
export interface Audit extends ModuleSurface {
  /** Appends an event in the caller's transaction (which runs in `event.orgId`'s tenant context). */
  record(trx: TxHandle, event: AuditEventInput): Promise<{ id: string; seq: number; hash: string }>;
  /** An org's events, newest first, keyset-paginated. */
  list(orgId: string, filter: AuditFilter): Promise<{ data: AuditEvent[]; nextCursor: string | null }>;
  /** Operator check of one chain, or of every chain (runs as the owner role). */
  verify(orgId?: string): Promise<ChainReport[]>;
}

export function createAudit(deps: AuditDeps): Audit {
  const service = createAuditService(createAuditRepo(deps.db));
  return {
    name: 'audit',
    record: service.record,
    list: service.list,
    async verify(orgId) {
      return orgId ? [await service.verifyChain(orgId)] : service.verifyAllChains();
    },
    routes: [{ name: 'audit', prefix: '/v1', plugin: asPlugin(auditRoutes(service)) }],
    registerJobs: registerAuditJobs,
  };
}
