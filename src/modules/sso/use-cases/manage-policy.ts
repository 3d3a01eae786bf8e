import { BlockList, isIP } from 'node:net';
import type { TenantCache } from '../../../platform/cache/cache.ts';
import type { TenantActorContext } from '../../../platform/http/actor.ts';
import { AppError } from '../../../platform/http/errors.ts';
import type { SecurityPolicy } from '../sso.repo.ts';
import type { SsoUseCaseDeps } from './deps.ts';

export interface PolicyInput {
  mfaRequired: boolean;
  sessionMaxAgeSec: number | null;
  idleTimeoutSec: number | null;
  ipAllowList: string[];
}

/** The policy as cached (JSON: times as epoch ms). */
export interface CachedPolicy {
  mfaRequired: boolean;
  sessionMaxAgeSec: number | null;
  idleTimeoutSec: number | null;
  idleSinceMs: number | null;
  ipAllowList: string[];
}

const locksYouOut = (detail: string) => new AppError('SSO.POLICY_LOCKS_YOU_OUT', 409, detail);
const badCidr = (cidr: string) => new AppError('SSO.INVALID_CIDR', 422, `Not an IP address or CIDR range: ${cidr}`, { cidr });

/** `10.0.0.0/8`, `2001:db8::/32`, or a single address. */
export function parseAllowList(cidrs: string[]): BlockList {
  const list = new BlockList();
  for (const raw of cidrs) {
    const [addr, bits] = raw.trim().split('/');
    const family = addr ? isIP(addr) : 0;
    const prefix = bits === undefined ? (family === 6 ? 128 : 32) : Number(bits);
    if (!family || !Number.isInteger(prefix) || prefix < 0 || prefix > (family === 6 ? 128 : 32)) throw badCidr(raw);
    list.addSubnet(addr!, prefix, family === 6 ? 'ipv6' : 'ipv4');
  }
  return list;
}

export function ipAllowed(list: BlockList, ip: string | undefined): boolean {
  if (!ip) return false;
  const v4 = ip.startsWith('::ffff:') && isIP(ip.slice(7)) === 4 ? ip.slice(7) : ip;
  const family = isIP(v4);
  return family !== 0 && list.check(v4, family === 6 ? 'ipv6' : 'ipv4');
}

const toCached = (p: SecurityPolicy): CachedPolicy => ({
  mfaRequired: p.mfaRequired,
  sessionMaxAgeSec: p.sessionMaxAgeSec,
  idleTimeoutSec: p.idleTimeoutSec,
  idleSinceMs: p.idleSince?.getTime() ?? null,
  ipAllowList: p.ipAllowList,
});

/**
 * The org's security policy. Reads go through the cache (read on every org request by the policy
 * authenticator); a change invalidates it after commit. A change that would shut out the person making
 * it (their IP outside the new allow-list, MFA required while they have none) is refused.
 */
export function managePolicy(deps: SsoUseCaseDeps & { policyCache: TenantCache<CachedPolicy>; mfaEnabled: (userId: string) => Promise<boolean> }) {
  const { repo, audit, policyCache } = deps;

  const cached = (orgId: string) => policyCache.get(orgId, 'policy', async () => toCached(await repo.withTenantRead(orgId, (trx) => repo.policy(trx))));

  return {
    cached,

    async get(orgId: string): Promise<SecurityPolicy> {
      return repo.withTenantRead(orgId, (trx) => repo.policy(trx));
    },

    async set(orgId: string, input: PolicyInput, caller: { userId: string | null; ip: string }, ctx: TenantActorContext): Promise<SecurityPolicy> {
      const ipAllowList = [...new Set(input.ipAllowList.map((c) => c.trim()))];
      if (ipAllowList.length > 0 && !ipAllowed(parseAllowList(ipAllowList), caller.ip)) {
        throw locksYouOut(`Your address (${caller.ip}) is outside the new allow-list`);
      }
      if (input.mfaRequired && caller.userId && !(await deps.mfaEnabled(caller.userId))) {
        throw locksYouOut('Enable two-factor authentication for yourself before requiring it for everyone');
      }
      const policy = await repo.withTenant(orgId, async (trx) => {
        const before = await repo.policy(trx);
        const idleSince = input.idleTimeoutSec === null ? null : input.idleTimeoutSec === before.idleTimeoutSec && before.idleSince ? before.idleSince : new Date();
        const next = { mfaRequired: input.mfaRequired, sessionMaxAgeSec: input.sessionMaxAgeSec, idleTimeoutSec: input.idleTimeoutSec, idleSince, ipAllowList };
        await repo.upsertPolicy(trx, orgId, next, caller.userId ?? ctx.actor.id);
        const changes: Record<string, unknown> = {};
        for (const k of ['mfaRequired', 'sessionMaxAgeSec', 'idleTimeoutSec', 'ipAllowList'] as const) {
          if (JSON.stringify(before[k]) !== JSON.stringify(next[k])) changes[k] = { from: before[k], to: next[k] };
        }
        await audit.record(trx, { orgId, action: 'sso.security_policy_changed', target: { type: 'organization', id: orgId }, changes, context: ctx });
        return repo.policy(trx);
      });
      await policyCache.invalidate(orgId, 'policy');
      return policy;
    },
  };
}

export type ManagePolicy = ReturnType<typeof managePolicy>;
