import { isUniqueViolation } from '../../../platform/db/constraint-errors.ts';
import type { TenantActorContext } from '../../../platform/http/actor.ts';
import { newId } from '../../../platform/ids.ts';
import { domainNotFound, domainNotVerified, domainTaken, invalidDomain, ssoRequired, verificationFailed } from '../sso.errors.ts';
import type { DomainRow } from '../sso.repo.ts';
import { randomToken } from '../sso.state.ts';
import type { SsoUseCaseDeps } from './deps.ts';

export const TXT_PREFIX = '_plinth-verification';
const DOMAIN = /^(?=.{3,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$/;

export interface Domain {
  id: string;
  domain: string;
  status: 'pending' | 'verified';
  ssoEnforced: boolean;
  /** The DNS TXT record that proves control: create it, then call verify. */
  txtRecord: { name: string; value: string };
  verifiedAt: Date | null;
  createdAt: Date;
}

const toDomain = (d: DomainRow): Domain => ({
  id: d.id,
  domain: d.domain,
  status: d.verifiedAt ? 'verified' : 'pending',
  ssoEnforced: d.ssoEnforced,
  txtRecord: { name: `${TXT_PREFIX}.${d.domain}`, value: `plinth-verification=${d.verificationToken}` },
  verifiedAt: d.verifiedAt,
  createdAt: d.createdAt,
});

/**
 * Verified domains (DNS TXT challenge) and SSO enforcement. An enforced domain is also written to the
 * global list the password login checks, in the same transaction.
 */
export function verifyDomains(deps: SsoUseCaseDeps) {
  const { repo, audit, resolveTxt } = deps;

  async function mustGet(id: string, trx: Parameters<Parameters<typeof repo.withTenant>[1]>[0]) {
    const d = await repo.domain(trx, id);
    if (!d) throw domainNotFound();
    return d;
  }

  return {
    async add(orgId: string, domain: string, ctx: TenantActorContext): Promise<Domain> {
      const name = domain.trim().toLowerCase().replace(/\.$/, '');
      if (!DOMAIN.test(name)) throw invalidDomain();
      const row = await repo
        .withTenant(orgId, async (trx) => {
          const row = await repo.insertDomain(trx, { orgId, id: newId(), domain: name, verificationToken: randomToken(), createdBy: ctx.actor.userId ?? ctx.actor.id });
          await audit.record(trx, { orgId, action: 'sso.domain_added', target: { type: 'domain', id: row.id }, changes: { domain: { to: name } }, context: ctx });
          return row;
        })
        .catch((err: unknown) => {
          throw isUniqueViolation(err) ? domainTaken() : err;
        });
      return toDomain(row);
    },

    async list(orgId: string): Promise<Domain[]> {
      return (await repo.withTenantRead(orgId, (trx) => repo.listDomains(trx))).map(toDomain);
    },

    /** Looks the TXT record up (outside any transaction), then marks the domain verified. */
    async verify(orgId: string, id: string, ctx: TenantActorContext): Promise<Domain> {
      const d = await repo.withTenantRead(orgId, (trx) => mustGet(id, trx));
      if (d.verifiedAt) return toDomain(d);
      const view = toDomain(d);
      const records = await resolveTxt(view.txtRecord.name).catch(() => [] as string[][]);
      if (!records.some((chunks) => chunks.join('') === view.txtRecord.value)) throw verificationFailed(view.txtRecord.name);
      const row = await repo
        .withTenant(orgId, async (trx) => {
          const row = await repo.markVerified(trx, id);
          await audit.record(trx, { orgId, action: 'sso.domain_verified', target: { type: 'domain', id }, changes: { domain: d.domain }, context: ctx });
          return row;
        })
        .catch((err: unknown) => {
          throw isUniqueViolation(err) ? domainTaken() : err;
        });
      return toDomain(row);
    },

    async setEnforced(orgId: string, id: string, enforced: boolean, ctx: TenantActorContext): Promise<Domain> {
      const row = await repo.withTenant(orgId, async (trx) => {
        const d = await mustGet(id, trx);
        if (!d.verifiedAt) throw domainNotVerified();
        const row = await repo.setEnforced(trx, orgId, d, enforced);
        if (d.ssoEnforced !== enforced) {
          await audit.record(trx, { orgId, action: enforced ? 'sso.enforcement_enabled' : 'sso.enforcement_disabled', target: { type: 'domain', id }, changes: { domain: d.domain, ssoEnforced: { from: d.ssoEnforced, to: enforced } }, context: ctx });
        }
        return row;
      });
      return toDomain(row);
    },

    async remove(orgId: string, id: string, ctx: TenantActorContext): Promise<void> {
      await repo.withTenant(orgId, async (trx) => {
        const d = await mustGet(id, trx);
        await repo.deleteDomain(trx, orgId, d);
        await audit.record(trx, { orgId, action: 'sso.domain_removed', target: { type: 'domain', id }, changes: { domain: d.domain }, context: ctx });
      });
    },

    /** Identity's password guard: 403 AUTH.SSO_REQUIRED when the e-mail's domain is enforced by an org. */
    async assertPasswordAllowed(email: string): Promise<void> {
      const domain = email.trim().toLowerCase().split('@').pop() ?? '';
      const orgId = domain ? await repo.enforcingOrg(domain) : null;
      if (orgId) throw ssoRequired(orgId);
    },
  };
}
