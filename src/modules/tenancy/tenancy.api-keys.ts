import type { Database } from '../../platform/db/database.ts';
import type { Principal } from '../../platform/http/auth.ts';
import { AppError } from '../../platform/http/errors.ts';
import { newId } from '../../platform/ids.ts';
import type { Audit, AuditContext } from '../audit/index.ts';
import { sha256Hex, type Identity } from '../identity/index.ts';
import { apiKeyNotFound } from './tenancy.errors.ts';
import { decodeCursor, page } from './tenancy.paging.ts';
import { ALL_PERMISSIONS, isSubset } from './tenancy.roles.ts';
import { newOrgToken, orgOfToken } from './tenancy.tokens.ts';

export const API_KEY_PREFIX = 'plk_';
const TOUCH_AFTER_MS = 60_000;
const COLUMNS = ['id', 'name', 'prefix', 'scopes', 'created_by', 'expires_at', 'last_used_at', 'revoked_at', 'created_at'] as const;

const parseScopes = (v: unknown): string[] => (typeof v === 'string' ? JSON.parse(v) : (v as string[]));

const toKey = (r: Record<string, any>) => ({
  id: r.id as string,
  name: r.name as string,
  prefix: r.prefix as string,
  scopes: parseScopes(r.scopes),
  createdBy: r.created_by as string,
  expiresAt: r.expires_at ? new Date(r.expires_at) : null,
  lastUsedAt: r.last_used_at ? new Date(r.last_used_at) : null,
  revokedAt: r.revoked_at ? new Date(r.revoked_at) : null,
  createdAt: new Date(r.created_at),
});

/**
 * Org-bound API keys. A key acts only in its org, with scopes ∩ its creator's *current* permissions
 * (demoting or removing the creator shrinks or kills the key on the next request).
 */
export function createApiKeys(deps: { db: Database; audit: Audit; identity: Identity }) {
  const { db, audit, identity } = deps;

  return {
    async create(orgId: string, input: { name: string; scopes: string[]; expiresAt?: string }, creator: string, held: ReadonlySet<string>, ctx: AuditContext) {
      const unknown = input.scopes.filter((s) => !(ALL_PERMISSIONS as readonly string[]).includes(s));
      if (unknown.length > 0) {
        throw new AppError('TENANCY.UNKNOWN_SCOPE', 422, `Unknown scope(s): ${unknown.join(', ')}`, { scopes: unknown });
      }
      if (!isSubset(input.scopes, held)) {
        throw new AppError('TENANCY.SCOPE_NOT_HELD', 403, 'An API key can only have scopes you hold yourself');
      }
      const expiresAt = input.expiresAt ? new Date(input.expiresAt) : null;
      if (expiresAt && expiresAt.getTime() <= Date.now()) {
        throw new AppError('TENANCY.BAD_EXPIRY', 422, 'expiresAt must be in the future');
      }
      const secret = newOrgToken(API_KEY_PREFIX, orgId);
      const id = newId();
      const scopes = [...new Set(input.scopes)].sort();
      const row = await db.withTenant(orgId, async (trx) => {
        const row = await trx
          .insertInto('api_keys')
          .values({
            tenant_id: orgId,
            id,
            name: input.name.trim(),
            prefix: secret.slice(0, API_KEY_PREFIX.length + 32 + 7),
            key_hash: sha256Hex(secret),
            scopes: JSON.stringify(scopes),
            created_by: creator,
            expires_at: expiresAt,
          })
          .returning(COLUMNS)
          .executeTakeFirstOrThrow();
        await audit.record(trx, { orgId, action: 'api_key.created', target: { type: 'api_key', id }, changes: { name: { to: row.name }, scopes: { to: scopes } }, context: ctx });
        return row;
      });
      return { ...toKey(row), secret };
    },

    async list(orgId: string, q: { cursor?: string; limit?: number }) {
      const limit = Math.min(q.limit ?? 50, 100);
      const shape = { list: 'api-keys' };
      const after = decodeCursor(q.cursor, shape);
      const rows = await db.withTenantRead(orgId, (trx) => {
        let query = trx.selectFrom('api_keys').select(COLUMNS);
        if (after) query = query.where('id', '>', after);
        return query.orderBy('id').limit(limit + 1).execute();
      });
      return page(rows as Array<{ id: string }>, limit, shape, toKey);
    },

    async get(orgId: string, keyId: string) {
      const row = await db.withTenant(orgId, (trx) => trx.selectFrom('api_keys').select(COLUMNS).where('id', '=', keyId).executeTakeFirst());
      if (!row) throw apiKeyNotFound();
      return toKey(row);
    },

    async revoke(orgId: string, keyId: string, ctx: AuditContext): Promise<void> {
      await db.withTenant(orgId, async (trx) => {
        const res = await trx.updateTable('api_keys').set({ revoked_at: new Date() }).where('id', '=', keyId).where('revoked_at', 'is', null).executeTakeFirst();
        if (Number(res.numUpdatedRows) === 0) throw apiKeyNotFound();
        await audit.record(trx, { orgId, action: 'api_key.revoked', target: { type: 'api_key', id: keyId }, context: ctx });
      });
    },

    async authenticate(secret: string): Promise<Principal | null> {
      const orgId = orgOfToken(API_KEY_PREFIX, secret);
      if (!orgId) return null;
      const row = await db.withTenant(orgId, async (trx) => {
        const row = await trx.selectFrom('api_keys').select(['id', 'created_by', 'expires_at', 'revoked_at', 'last_used_at']).where('key_hash', '=', sha256Hex(secret)).executeTakeFirst();
        if (!row || row.revoked_at || (row.expires_at && new Date(row.expires_at) <= new Date())) return null;
        if (!row.last_used_at || Date.now() - new Date(row.last_used_at).getTime() > TOUCH_AFTER_MS) {
          await trx.updateTable('api_keys').set({ last_used_at: new Date() }).where('id', '=', row.id).execute();
        }
        return row;
      });
      if (!row || !(await identity.isActive(row.created_by))) return null;
      return { kind: 'api_key', userId: row.created_by, apiKeyId: row.id, apiKeyOrgId: orgId, isPlatformAdmin: false };
    },

    /** Membership role of the creator and the key's scopes, read together in the org's context. */
    async scopesAndRole(orgId: string, keyId: string, creator: string): Promise<{ scopes: string[]; role: string } | null> {
      return db.withTenant(orgId, async (trx) => {
        const key = await trx.selectFrom('api_keys').select(['scopes', 'revoked_at']).where('id', '=', keyId).executeTakeFirst();
        const member = await trx.selectFrom('memberships').select('role').where('user_id', '=', creator).executeTakeFirst();
        if (!key || key.revoked_at || !member) return null;
        return { scopes: parseScopes(key.scopes), role: member.role as string };
      });
    },
  };
}

export type ApiKeys = ReturnType<typeof createApiKeys>;
