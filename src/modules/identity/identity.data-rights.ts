import { Readable } from 'node:stream';
import type { CacheProvider } from '../../platform/cache/cache.ts';
import type { TxHandle } from '../../platform/db/database.ts';
import type { ActorContext } from '../../platform/http/actor.ts';
import { newId } from '../../platform/ids.ts';
import type { EventPublisher } from '../../platform/outbox/publisher.ts';
import type { ObjectStorage } from '../../platform/storage/index.ts';
import { PLATFORM_AUDIT_TENANT, type Audit } from '../audit/index.ts';
import type { DataRightsRepo } from './data-rights.repo.ts';
import { userNotFound } from './identity.errors.ts';
import { USER_ERASED, type UserErasedPayload } from './identity.events.ts';

/**
 * Another module's part of a user's data export: a named section, and the orgs where it found the user
 * (their audit trail is exported from those chains too). Registered through `onDataExport`.
 */
export type DataExportSection = (userId: string) => Promise<{ data: unknown; orgIds?: string[] }>;

/** Checked before an erasure (tenancy: the user must not be an org's last owner); throws to refuse. */
export type ErasureGuard = (userId: string) => Promise<void>;

/** Work another module does inside the erasure transaction (platform tenant context). */
export type ErasureHook = (trx: TxHandle, userId: string, ctx: ActorContext) => Promise<void>;

export interface DataExportLink {
  url: string;
  filename: string;
  bytes: number;
  expiresAt: Date;
}

export interface DataRightsDeps {
  repo: DataRightsRepo;
  audit: Audit;
  events: EventPublisher;
  storage: ObjectStorage;
  cache: CacheProvider;
  inPlatformTx: <T>(fn: (trx: TxHandle) => Promise<T>) => Promise<T>;
  /** Drops revoked sessions from every instance's cache (after commit). */
  invalidateSessions(tokenHashes: string[]): Promise<void>;
  /** Stored for an erased account: no password verifies against it. */
  unusablePassword: string;
  /** Other modules' erasure work in the same transaction (identity's disable hooks: API keys). */
  erasureHooks: ErasureHook[];
  /** How long the download link of an export works (default 1 hour). */
  linkTtlSec?: number;
}

export const DATA_EXPORT_FORMAT = 'plinth.data-subject-export.v1';

/**
 * GDPR art. 15 and 17 for one person. The export gathers identity's data, every registered module's
 * section and the audit trail into one JSON document in file storage (an expiring link). The erasure
 * anonymizes the account and its audit personal data in one transaction, then tells the other modules
 * through the outbox (`identity.user_erased`): each erases or pseudonymizes its own rows.
 */
export function createDataRights(deps: DataRightsDeps) {
  const sections = new Map<string, DataExportSection>();
  const guards: ErasureGuard[] = [];
  const mfaEnabled = deps.cache.namespace<boolean>('mfa-enabled', { ttlSec: 300 });

  return {
    onDataExport(name: string, section: DataExportSection): void {
      if (sections.has(name) || name === 'identity' || name === 'audit') throw new Error(`data export section "${name}" is already registered`);
      sections.set(name, section);
    },

    onErasure(guard: ErasureGuard): void {
      guards.push(guard);
    },

    /** Writes the user's export to storage and returns a link to it (audited in the platform chain). */
    async exportUser(userId: string, ctx: ActorContext): Promise<DataExportLink> {
      const identity = await deps.repo.exportUser(userId);
      if (!identity) throw userNotFound();
      const modules: Record<string, unknown> = {};
      const orgIds = new Set<string>();
      for (const [name, section] of sections) {
        const part = await section(userId);
        modules[name] = part.data;
        for (const id of part.orgIds ?? []) orgIds.add(id);
      }
      const subjects = identity.account.erasedAt ? [] : [{ email: identity.account.email }];
      const audit = await deps.audit.exportSubject(userId, subjects, [...orgIds]);
      const id = newId();
      const doc = { format: DATA_EXPORT_FORMAT, exportId: id, generatedAt: new Date().toISOString(), userId, identity, ...modules, audit };
      const key = `data-exports/${userId}/${id}.json`;
      const filename = `plinth-data-export-${id}.json`;
      const ttl = deps.linkTtlSec ?? 3_600;
      const { bytes } = await deps.storage.put(key, Readable.from([JSON.stringify(doc, null, 2)]), { contentType: 'application/json' });
      const url = await deps.storage.signedUrl(key, { expiresInSec: ttl, filename, contentType: 'application/json' });
      await deps.inPlatformTx((trx) =>
        deps.audit.record(trx, { orgId: PLATFORM_AUDIT_TENANT, action: 'user.data_exported', target: { type: 'user', id: userId }, changes: { exportId: id, bytes }, context: ctx }),
      );
      return { url, filename, bytes, expiresAt: new Date(Date.now() + ttl * 1000) };
    },

    /**
     * Erases the user: account anonymized, sessions revoked, second factors gone, API keys revoked (hooks),
     * the audit personal data about them blanked in every chain (the chain still verifies), audited as
     * `user.erased`, and `identity.user_erased` published for the other modules. 404 for an unknown or
     * already erased user; a guard (tenancy: last owner of an org) may refuse with 409.
     */
    async eraseUser(userId: string, ctx: ActorContext): Promise<{ userId: string; erasedAt: Date; auditRecordsErased: number }> {
      const email = await deps.repo.liveEmail(userId);
      if (!email) throw userNotFound();
      for (const guard of guards) await guard(userId);
      const { revoked, auditRecordsErased } = await deps.inPlatformTx(async (trx) => {
        const revoked = await deps.repo.eraseUser(trx, userId, email, deps.unusablePassword);
        if (!revoked) throw userNotFound();
        for (const hook of deps.erasureHooks) await hook(trx, userId, ctx);
        const auditRecordsErased = await deps.audit.eraseSubjects(trx, [{ userId }, { email }]);
        // Recorded after the erasure: its own IP record (about the actor, maybe this user) is kept only
        // when someone else erased the account.
        await deps.audit.record(trx, {
          orgId: PLATFORM_AUDIT_TENANT,
          action: 'user.erased',
          target: { type: 'user', id: userId },
          changes: { sessionsRevoked: revoked.length, auditRecordsErased },
          context: ctx.actor.userId === userId ? { ...ctx, ip: null } : ctx,
        });
        await deps.events.add<UserErasedPayload>(trx, { name: USER_ERASED, tenantId: null, payload: { userId } });
        return { revoked, auditRecordsErased };
      });
      await deps.invalidateSessions(revoked);
      await mfaEnabled.invalidate(PLATFORM_AUDIT_TENANT, userId);
      return { userId, erasedAt: new Date(), auditRecordsErased };
    },
  };
}

export type DataRights = ReturnType<typeof createDataRights>;
