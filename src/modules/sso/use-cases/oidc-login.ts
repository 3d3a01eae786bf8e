import type * as Oidc from 'openid-client';
import type { RequestMeta } from '../../identity/index.ts';
import { newId } from '../../../platform/ids.ts';
import { connectionNotFound, ssoRefused } from '../sso.errors.ts';
import type { ConnectionRow, OidcConfig } from '../sso.repo.ts';
import { hashState, newOrgState, orgOfState } from '../sso.state.ts';
import type { SsoUseCaseDeps } from './deps.ts';
import { groupsOf, type CompleteLogin, type SsoLogin } from './complete-login.ts';
import { endpoints } from './manage-connections.ts';

const DISCOVERY_TTL_MS = 10 * 60_000;

/**
 * OIDC authorization code flow with PKCE (S256), state and nonce, through `openid-client`: it checks the
 * ID token's signature (the IdP's JWKS), issuer, audience, expiry, nonce and the code exchange. The state
 * is single-use (consumed before the code is exchanged), so a replayed callback is refused.
 */
/** openid-client (≈ 8 MB of RSS) loads on the first OIDC login, not at start. */
let loaded: Promise<typeof Oidc> | undefined;
const loadOidc = () => (loaded ??= import('openid-client'));

export function oidcLogin(deps: SsoUseCaseDeps, complete: CompleteLogin) {
  const { repo, secrets, settings } = deps;
  const discovered = new Map<string, { at: number; config: Promise<Oidc.Configuration> }>();

  function configFor(conn: ConnectionRow): Promise<Oidc.Configuration> {
    const key = `${conn.orgId}:${conn.id}:${conn.updatedAt.getTime()}`;
    const hit = discovered.get(key);
    if (hit && Date.now() - hit.at < DISCOVERY_TTL_MS) return hit.config;
    const c = conn.config as OidcConfig;
    const secret = conn.secretCiphertext ? secrets.open(conn.secretCiphertext) : undefined;
    const config = loadOidc().then((oidc) => {
      const metadata: Partial<Oidc.ClientMetadata> = { [oidc.clockTolerance]: settings.clockSkewSec, [oidc.clockSkew]: settings.clockOffsetSec ?? 0 };
      return oidc.discovery(new URL(c.issuer), c.clientId, metadata, secret ? oidc.ClientSecretPost(secret) : oidc.None(), {
        execute: settings.allowInsecureIssuers ? [oidc.allowInsecureRequests] : [],
        timeout: 5,
      });
    });
    config.catch(() => discovered.delete(key));
    discovered.set(key, { at: Date.now(), config });
    return config;
  }

  async function enabledConnection(orgId: string, connectionId: string): Promise<ConnectionRow> {
    const conn = await repo.withTenantRead(orgId, (trx) => repo.connection(trx, connectionId));
    if (!conn || conn.protocol !== 'oidc' || !conn.enabled) throw connectionNotFound();
    return conn;
  }

  return {
    /** The IdP URL to send the browser to. */
    async start(orgId: string, connectionId: string): Promise<{ redirectUrl: string }> {
      const conn = await enabledConnection(orgId, connectionId);
      const config = await configFor(conn).catch(() => {
        throw ssoRefused();
      });
      const oidc = await loadOidc();
      const state = newOrgState(orgId);
      const nonce = oidc.randomNonce();
      const codeVerifier = oidc.randomPKCECodeVerifier();
      await repo.withTenant(orgId, (trx) =>
        repo.insertLoginState(trx, {
          orgId,
          id: newId(),
          connectionId,
          stateHash: hashState(state),
          nonce,
          codeVerifier,
          expiresAt: new Date(Date.now() + settings.loginStateTtlSec * 1000),
        }),
      );
      const url = oidc.buildAuthorizationUrl(config, {
        redirect_uri: endpoints(settings.publicUrl, orgId, connectionId).oidcRedirectUri,
        scope: 'openid email profile',
        response_type: 'code',
        state,
        nonce,
        code_challenge: await oidc.calculatePKCECodeChallenge(codeVerifier),
        code_challenge_method: 'S256',
      });
      return { redirectUrl: url.href };
    },

    /** The redirect back from the IdP: `?code&state` (or `?error&state`). */
    async callback(query: Record<string, string>, meta: RequestMeta): Promise<SsoLogin> {
      const state = query.state ?? '';
      const orgId = orgOfState(state);
      if (!orgId) throw ssoRefused();
      // Consumed in its own transaction: whatever happens next, this state cannot be used again.
      const saved = await repo.withTenant(orgId, (trx) => repo.consumeLoginState(trx, hashState(state)));
      if (!saved || !saved.codeVerifier || !saved.nonce || saved.expiresAt.getTime() <= Date.now()) throw ssoRefused();
      const conn = await enabledConnection(orgId, saved.connectionId).catch(() => {
        throw ssoRefused();
      });
      const config = await configFor(conn);
      const current = new URL(endpoints(settings.publicUrl, orgId, conn.id).oidcRedirectUri);
      for (const [k, v] of Object.entries(query)) current.searchParams.set(k, v);
      let claims: Oidc.IDToken;
      const oidc = await loadOidc();
      try {
        const tokens = await oidc.authorizationCodeGrant(config, current, {
          pkceCodeVerifier: saved.codeVerifier,
          expectedState: state,
          expectedNonce: saved.nonce,
          idTokenExpected: true,
        });
        claims = tokens.claims()!;
      } catch {
        throw ssoRefused();
      }
      const email = typeof claims.email === 'string' ? claims.email : null;
      // An IdP that says the address is unverified does not prove the person owns it.
      if (!email || claims.email_verified === false) throw ssoRefused();
      return complete(
        conn,
        { email, name: typeof claims.name === 'string' ? claims.name : null, groups: groupsOf(claims[conn.groupsAttribute ?? 'groups']), subject: claims.sub },
        meta,
        async () => undefined,
      );
    },
  };
}
