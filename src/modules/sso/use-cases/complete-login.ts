import type { ActorContext } from '../../../platform/http/actor.ts';
import type { NewSession, RequestMeta, User } from '../../identity/index.ts';
import { normalizeEmail } from '../../identity/index.ts';
import { emailNotInVerifiedDomain, ssoRefused } from '../sso.errors.ts';
import type { ConnectionRow, SsoTx } from '../sso.repo.ts';
import type { SsoUseCaseDeps } from './deps.ts';

/** What an IdP vouched for, after its protocol checks passed. */
export interface ExternalIdentity {
  email: string;
  name: string | null;
  groups: string[];
  /** The IdP's subject (OIDC `sub`, SAML NameID), recorded in the audit event. */
  subject: string;
}

export interface SsoLogin extends NewSession {
  user: User;
  orgId: string;
  role: string;
  provisioned: boolean;
}

/** When several mapped groups match, the role with the most rights wins (an IdP never mints owners). */
const RANK: Record<string, number> = { viewer: 1, billing: 2, member: 3, admin: 4 };

export function roleFor(conn: Pick<ConnectionRow, 'defaultRole' | 'roleMapping'>, groups: string[]): { role: string; mapped: boolean } {
  let best: string | null = null;
  for (const g of groups) {
    const r = conn.roleMapping[g];
    if (r && (best === null || (RANK[r] ?? 0) > (RANK[best] ?? 0))) best = r;
  }
  return best ? { role: best, mapped: true } : { role: conn.defaultRole, mapped: false };
}

/** Groups from a claim/attribute that may be a string, an array of strings, or absent. */
export function groupsOf(value: unknown): string[] {
  const list = Array.isArray(value) ? value : value === undefined || value === null ? [] : [value];
  return list.filter((g): g is string => typeof g === 'string' && g.length > 0 && g.length <= 256).slice(0, 200);
}

/**
 * The protocol-independent end of an SSO login: the asserted e-mail must be in one of the org's verified
 * domains (otherwise any org's IdP could claim anyone's account), then just-in-time provisioning (user,
 * membership with the default or mapped role), the session, and the audit event — one transaction, with
 * `inTx` (the protocol's own one-time checks: state, replay) first.
 */
export function completeLogin(deps: SsoUseCaseDeps) {
  const { repo, audit, identity, tenancy } = deps;
  return async (conn: ConnectionRow, who: ExternalIdentity, meta: RequestMeta, inTx: (trx: SsoTx) => Promise<void>): Promise<SsoLogin> => {
    const email = normalizeEmail(who.email);
    const at = email.lastIndexOf('@');
    if (at < 1 || email.length > 254) throw ssoRefused();
    const domain = email.slice(at + 1);
    // Read before the transaction: PGlite serializes transactions on its one connection.
    const existing = await identity.findUserByEmail(email);
    if (existing?.disabled) throw ssoRefused();
    const { role, mapped } = roleFor(conn, who.groups);
    const orgId = conn.orgId;
    return repo.withTenant(orgId, async (trx) => {
      await inTx(trx);
      if (!(await repo.verifiedDomainNames(trx)).includes(domain)) throw emailNotInVerifiedDomain();
      const user = existing ?? (await identity.createExternalUser(trx, { email, name: (who.name ?? email.slice(0, at)).slice(0, 100) || email.slice(0, at) }));
      const ctx: ActorContext = { actor: { type: 'user', id: user.id, userId: user.id }, requestId: meta.requestId, ip: meta.ip };
      const member = await tenancy.provisionMember(trx, orgId, user.id, role, { syncRole: mapped, via: 'sso' }, ctx);
      const session = await identity.startSession(trx, user.id, meta);
      await audit.record(trx, {
        orgId,
        action: 'sso.login',
        target: { type: 'user', id: user.id },
        changes: {
          connectionId: conn.id,
          protocol: conn.protocol,
          subject: who.subject.slice(0, 256),
          sessionId: session.sessionId,
          ...(existing ? {} : { userProvisioned: true }),
          ...(member.outcome === 'added' ? { memberProvisioned: { role: member.role } } : {}),
        },
        context: ctx,
      });
      return { ...session, user, orgId, role: member.role, provisioned: !existing || member.outcome === 'added', roleChanged: member.outcome === 'changed' };
    }).then(async (login) => {
      // A role the IdP's groups moved: every instance drops its cached role once the change has committed.
      if (login.roleChanged) await tenancy.invalidateMember(orgId, login.user.id);
      const { roleChanged: _changed, ...rest } = login;
      return rest;
    });
  };
}

export type CompleteLogin = ReturnType<typeof completeLogin>;
