import type { ActorContext } from '../../../platform/http/actor.ts';
import type { Principal } from '../../../platform/http/auth.ts';
import { AppError } from '../../../platform/http/errors.ts';
import { decodeCursor, listFingerprint, toPage } from '../../../platform/http/pagination.ts';
import { isUuid, newId } from '../../../platform/ids.ts';
import { sha256Hex } from '../../identity/index.ts';
import { apiKeyNotFound } from '../tenancy.errors.ts';
import type { ApiKeyRow } from '../tenancy.repo.ts';
import { ALL_PERMISSIONS, isSubset } from '../tenancy.roles.ts';
import { newOrgToken, orgOfToken } from '../tenancy.tokens.ts';
import type { UseCaseDeps } from './deps.ts';

export const API_KEY_PREFIX = 'plk_';
const TOUCH_AFTER_MS = 60_000;

export type ApiKey = ApiKeyRow;

/**
 * Org-bound API keys. A key acts only in its org, with scopes ∩ its creator's *current* permissions
 * (demoting or removing the creator shrinks or kills the key on the next request).
 */
export function issueApiKeys(deps: UseCaseDeps) {
  const { repo, audit, identity } = deps;

  return {
    async create(
      orgId: string,
      input: { name: string; scopes: string[]; expiresAt?: Date },
      creator: string,
      held: ReadonlySet<string>,
      ctx: ActorContext,
    ): Promise<ApiKey & { secret: string }> {
      const unknown = input.scopes.filter((s) => !(ALL_PERMISSIONS as readonly string[]).includes(s));
      if (unknown.length > 0) {
        throw new AppError('TENANCY.UNKNOWN_SCOPE', 422, `Unknown scope(s): ${unknown.join(', ')}`, { scopes: unknown });
      }
      if (!isSubset(input.scopes, held)) {
        throw new AppError('TENANCY.SCOPE_NOT_HELD', 403, 'An API key can only have scopes you hold yourself');
      }
      const expiresAt = input.expiresAt ?? null;
      if (expiresAt && expiresAt.getTime() <= Date.now()) {
        throw new AppError('TENANCY.BAD_EXPIRY', 422, 'expiresAt must be in the future');
      }
      const secret = newOrgToken(API_KEY_PREFIX, orgId);
      const id = newId();
      const scopes = [...new Set(input.scopes)].sort();
      const key = await repo.withTenant(orgId, async (trx) => {
        const key = await repo.insertApiKey(trx, {
          orgId,
          id,
          name: input.name.trim(),
          prefix: secret.slice(0, API_KEY_PREFIX.length + 32 + 7),
          keyHash: sha256Hex(secret),
          scopes,
          createdBy: creator,
          expiresAt,
        });
        await audit.record(trx, { orgId, action: 'api_key.created', target: { type: 'api_key', id }, changes: { name: { to: key.name }, scopes: { to: scopes } }, context: ctx });
        return key;
      });
      return { ...key, secret };
    },

    async list(orgId: string, q: { cursor?: string; limit: number }): Promise<{ data: ApiKey[]; nextCursor: string | null }> {
      const fingerprint = listFingerprint({ list: 'api-keys' });
      const afterId = q.cursor ? (decodeCursor(q.cursor, fingerprint, ([, k]) => typeof k === 'string' && isUuid(k))[1] as string) : undefined;
      const rows = await repo.listApiKeys(orgId, { afterId, limit: q.limit + 1 });
      return toPage(rows, q.limit, fingerprint, (r) => [null, r.id]);
    },

    async get(orgId: string, keyId: string): Promise<ApiKey> {
      const key = await repo.withTenant(orgId, (trx) => repo.apiKeyById(trx, keyId));
      if (!key) throw apiKeyNotFound();
      return key;
    },

    async revoke(orgId: string, keyId: string, ctx: ActorContext): Promise<void> {
      await repo.withTenant(orgId, async (trx) => {
        if (!(await repo.revokeApiKey(trx, keyId))) throw apiKeyNotFound();
        await audit.record(trx, { orgId, action: 'api_key.revoked', target: { type: 'api_key', id: keyId }, context: ctx });
      });
    },

    /** A `plk_…` secret → its creator's principal, acting only in the key's org; null when not usable. */
    async authenticate(secret: string): Promise<Principal | null> {
      const orgId = orgOfToken(API_KEY_PREFIX, secret);
      if (!orgId) return null;
      const key = await repo.withTenant(orgId, async (trx) => {
        const key = await repo.apiKeyByHash(trx, sha256Hex(secret));
        if (!key || key.revokedAt || (key.expiresAt && key.expiresAt <= new Date())) return null;
        if (!key.lastUsedAt || Date.now() - key.lastUsedAt.getTime() > TOUCH_AFTER_MS) await repo.touchApiKey(trx, key.id);
        return key;
      });
      if (!key || !(await identity.isActive(key.createdBy))) return null;
      return { kind: 'api_key', userId: key.createdBy, apiKeyId: key.id, apiKeyOrgId: orgId, isPlatformAdmin: false };
    },

    /** Membership role of the creator and the key's scopes, read together in the org's context. */
    async scopesAndRole(orgId: string, keyId: string, creator: string): Promise<{ scopes: string[]; role: string } | null> {
      return repo.withTenant(orgId, async (trx) => {
        const key = await repo.apiKeyById(trx, keyId);
        const member = await repo.membership(trx, creator);
        if (!key || key.revokedAt || !member) return null;
        return { scopes: key.scopes, role: member.role };
      });
    },
  };
}

export type ApiKeys = ReturnType<typeof issueApiKeys>;
