import type { Profile, SAML } from '@node-saml/node-saml';
import { newId } from '../../../platform/ids.ts';
import type { RequestMeta } from '../../identity/index.ts';
import { connectionNotFound, ssoRefused } from '../sso.errors.ts';
import type { ConnectionRow, SamlConfig } from '../sso.repo.ts';
import { hashState, randomToken } from '../sso.state.ts';
import type { SsoUseCaseDeps } from './deps.ts';
import { groupsOf, type CompleteLogin, type SsoLogin } from './complete-login.ts';
import { endpoints } from './manage-connections.ts';

const EMAIL_ATTRIBUTES = ['email', 'mail', 'http://schemas.xmlsoap.org/ws/2005/05/identity/claims/emailaddress'];
const NAME_ATTRIBUTES = ['name', 'displayName', 'http://schemas.xmlsoap.org/ws/2005/05/identity/claims/name'];
/** How long a consumed assertion id is remembered (assertions are accepted for minutes, not days). */
const REPLAY_WINDOW_MS = 24 * 3_600_000;

const first = (v: unknown): string | null => (typeof v === 'string' ? v : Array.isArray(v) && typeof v[0] === 'string' ? v[0] : null);

/**
 * SAML 2.0 Web SSO (HTTP-Redirect AuthnRequest, HTTP-POST Response) through `@node-saml/node-saml`: the
 * assertion must be signed by the connection's IdP certificate (only signed content is read, which is what
 * defeats signature wrapping), its audience must be this connection's SP entity id, and its time window
 * must hold within the clock skew allowance. On top: the assertion's issuer must be the IdP entity id,
 * each assertion id is accepted once (replay), and an SP-initiated response must come back with the
 * RelayState this server issued, answering that very request (InResponseTo).
 */
export function samlLogin(deps: SsoUseCaseDeps, complete: CompleteLogin) {
  const { repo, settings } = deps;

  // The SAML library (≈ 16 MB of RSS with its XML and crypto stack) loads on the first SAML login, not at start.
  async function samlFor(conn: ConnectionRow, requestId?: string): Promise<SAML> {
    const { SAML, ValidateInResponseTo } = await import('@node-saml/node-saml');
    const c = conn.config as SamlConfig;
    const urls = endpoints(settings.publicUrl, conn.orgId, conn.id);
    return new SAML({
      issuer: urls.spEntityId,
      audience: urls.spEntityId,
      callbackUrl: urls.acsUrl,
      entryPoint: c.idpSsoUrl,
      idpCert: c.idpCert,
      wantAssertionsSigned: true,
      wantAuthnResponseSigned: false,
      acceptedClockSkewMs: settings.clockSkewSec * 1000,
      // InResponseTo is checked below against the stored login state (shared by every instance).
      validateInResponseTo: ValidateInResponseTo.never,
      disableRequestedAuthnContext: true,
      identifierFormat: 'urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress',
      ...(requestId ? { generateUniqueId: () => requestId } : {}),
    });
  }

  async function enabledConnection(orgId: string, connectionId: string): Promise<ConnectionRow> {
    const conn = await repo.withTenantRead(orgId, (trx) => repo.connection(trx, connectionId));
    if (!conn || conn.protocol !== 'saml' || !conn.enabled) throw connectionNotFound();
    return conn;
  }

  /** The InResponseTo the signed assertion itself carries (SubjectConfirmationData), if any. */
  function signedInResponseTo(profile: Profile): string | null {
    const assertion = (profile.getAssertion?.() as { Assertion?: any } | undefined)?.Assertion;
    for (const sc of assertion?.Subject?.[0]?.SubjectConfirmation ?? []) {
      const v = sc?.SubjectConfirmationData?.[0]?.$?.InResponseTo;
      if (typeof v === 'string') return v;
    }
    return null;
  }

  return {
    async start(orgId: string, connectionId: string): Promise<{ redirectUrl: string }> {
      const conn = await enabledConnection(orgId, connectionId);
      const requestId = `_${newId().replaceAll('-', '')}`;
      const relayState = randomToken();
      await repo.withTenant(orgId, (trx) =>
        repo.insertLoginState(trx, {
          orgId,
          id: newId(),
          connectionId,
          stateHash: hashState(relayState),
          requestId,
          expiresAt: new Date(Date.now() + settings.loginStateTtlSec * 1000),
        }),
      );
      return { redirectUrl: await (await samlFor(conn, requestId)).getAuthorizeUrlAsync(relayState, undefined, {}) };
    },

    /** SP metadata for the IdP administrator (entity id, ACS URL, NameID format). */
    async metadata(orgId: string, connectionId: string): Promise<string> {
      return (await samlFor(await enabledConnection(orgId, connectionId))).generateServiceProviderMetadata(null, null);
    },

    /** The IdP's HTTP-POST to the ACS: SP-initiated (InResponseTo + RelayState) or IdP-initiated. */
    async acs(orgId: string, connectionId: string, form: { SAMLResponse?: string; RelayState?: string }, meta: RequestMeta): Promise<SsoLogin> {
      const conn = await enabledConnection(orgId, connectionId).catch(() => {
        throw ssoRefused();
      });
      if (!form.SAMLResponse) throw ssoRefused();
      let profile: Profile;
      try {
        const result = await (await samlFor(conn)).validatePostResponseAsync({ SAMLResponse: form.SAMLResponse });
        if (!result.profile) throw new Error('no profile');
        profile = result.profile;
      } catch {
        throw ssoRefused();
      }
      const c = conn.config as SamlConfig;
      if (profile.issuer !== c.idpEntityId) throw ssoRefused();
      const assertionId = (profile.getAssertion?.() as { Assertion?: { $?: { ID?: string } } } | undefined)?.Assertion?.$?.ID;
      if (!assertionId) throw ssoRefused();
      // The Response's InResponseTo is outside the assertion's signature; the signed one wins when present.
      const inResponseTo = signedInResponseTo(profile) ?? profile.inResponseTo ?? null;
      if (!inResponseTo && !c.allowIdpInitiated) throw ssoRefused();
      const attrs = (profile.attributes ?? {}) as Record<string, unknown>;
      const email = EMAIL_ATTRIBUTES.map((k) => first(attrs[k])).find(Boolean) ?? (profile.nameID?.includes('@') ? profile.nameID : null);
      if (!email) throw ssoRefused();
      const name = NAME_ATTRIBUTES.map((k) => first(attrs[k])).find(Boolean) ?? null;
      return complete(conn, { email, name, groups: groupsOf(attrs[conn.groupsAttribute ?? 'groups']), subject: profile.nameID }, meta, async (trx) => {
        if (inResponseTo) {
          const state = form.RelayState ? await repo.consumeLoginState(trx, hashState(form.RelayState)) : null;
          if (!state || state.connectionId !== conn.id || state.requestId !== inResponseTo || state.expiresAt.getTime() <= Date.now()) throw ssoRefused();
        }
        const fresh = await repo.rememberMessage(trx, { orgId, connectionId: conn.id, messageId: assertionId.slice(0, 300), expiresAt: new Date(Date.now() + REPLAY_WINDOW_MS) });
        if (!fresh) throw ssoRefused();
      });
    },
  };
}
