import type { Database, TxHandle } from '../../platform/db/database.ts';
import { asPlugin } from '../../platform/http/module-routes.ts';
import type { ModuleSurface } from '../../platform/module.ts';
import { registerAuditJobs } from './audit.jobs.ts';
import { createAuditRepo, type Backlog } from './audit.repo.ts';
import { auditRoutes } from './audit.routes.ts';
import { createAuditService, type AuditEvent, type AuditEventInput, type AuditFilter, type AuditPendingRow, type ChainReport, type AuditStreaming, type DataSubject, type SubjectAuditExport } from './audit.service.ts';

export { AUDIT_READ } from './audit.routes.ts';
export { AUDIT_EVENT_RECORDED, PLATFORM_AUDIT_TENANT, subjectKey } from './audit.service.ts';
export type { AuditEventRecordedPayload, AuditStreaming } from './audit.service.ts';
export type { AuditEvent, AuditEventInput, AuditFilter, AuditPendingRow, ChainReport, DataSubject, SubjectAuditExport } from './audit.service.ts';
export type { Backlog } from './audit.repo.ts';
export { runAuditCommand } from './audit.cli.ts';

export interface AuditDeps {
  db: Database;
  /** Audit streaming (audit.event_recorded through the outbox); without it nothing is streamed. */
  streaming?: AuditStreaming;
}

/**
 * Append-only, tamper-evident audit log: one hash chain per org, plus the platform chain. Writes append
 * pending events; the sequencer (a worker schedule) chains them in commit order within seconds.
 */
export interface Audit extends ModuleSurface {
  /** Appends a pending event in the caller's transaction (which runs in `event.orgId`'s tenant context). Locks nothing shared. */
  record(trx: TxHandle, event: AuditEventInput): Promise<{ id: string }>;
  /** The pending row `record` would append (no personal data), for a writer that appends many orgs' events in one statement. */
  pendingRow(event: AuditEventInput): AuditPendingRow;
  /** An org's events, newest first (pending ones first unless `pending: false`), keyset-paginated. */
  list(orgId: string, filter: AuditFilter): Promise<{ data: AuditEvent[]; nextCursor: string | null }>;
  /** Operator check of one chain's sequenced part, or of every chain, with each chain's backlog (runs as the owner role). */
  verify(orgId?: string): Promise<ChainReport[]>;
  /** Sequences the committed pending events of every chain (or one) now; the worker schedule calls it every second. */
  sequence(orgId?: string): Promise<{ chains: number; sequenced: number }>;
  /** Pending events of all chains together and the oldest one's age (metrics). */
  backlog(): Promise<Backlog>;
  /**
   * Data rights: blanks the personal data recorded about the subjects in every chain, in the caller's
   * transaction (the chain still verifies: the hash covers references, not the data). Returns rows erased.
   */
  eraseSubjects(trx: TxHandle, subjects: DataSubject[]): Promise<number>;
  /** Data rights: the user's audit trail across chains (platform chain, `orgIds`, and wherever data about the subjects is). */
  exportSubject(userId: string, subjects: DataSubject[], orgIds: string[]): Promise<SubjectAuditExport>;
}

export function createAudit(deps: AuditDeps): Audit {
  const service = createAuditService(createAuditRepo(deps.db), deps.streaming);
  return {
    name: 'audit',
    record: service.record,
    pendingRow: service.pendingRow,
    list: service.list,
    sequence: service.sequence,
    backlog: service.backlog,
    eraseSubjects: service.eraseSubjects,
    exportSubject: (userId, subjects, orgIds) => service.exportSubject(userId, subjects, orgIds),
    async verify(orgId) {
      return orgId ? [await service.verifyChain(orgId)] : service.verifyAllChains();
    },
    routes: [{ name: 'audit', prefix: '/v1', plugin: asPlugin(auditRoutes(service)) }],
    registerJobs: (jobs) => registerAuditJobs(jobs, service.sequence),
  };
}
