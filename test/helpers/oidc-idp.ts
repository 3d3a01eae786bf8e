import http from 'node:http';
import type { AddressInfo } from 'node:net';
import Provider from 'oidc-provider';

export interface OidcIdp {
  issuer: string;
  /** Who signs in at the IdP next (the test's "user at the login form"). */
  setUser(user: { sub: string; email: string; name?: string; groups?: string[]; emailVerified?: boolean }): void;
  /** Follows the browser redirects from the authorization URL to the redirect back to the app (cookies kept). */
  authorize(authorizationUrl: string, redirectUri: string): Promise<URL>;
  close(): Promise<void>;
}

/**
 * A real OpenID Provider (`oidc-provider`) on a free loopback port, with the login and consent
 * interactions answered automatically for the current test user.
 */
export async function startOidcIdp(clients: Array<{ clientId: string; clientSecret: string; redirectUri: string }>): Promise<OidcIdp> {
  let current = { sub: 'u1', email: 'u1@example.test', name: 'U One', groups: [] as string[], emailVerified: true };
  const server = http.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const issuer = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  const provider = new Provider(issuer, {
    clients: clients.map((c) => ({
      client_id: c.clientId,
      client_secret: c.clientSecret,
      redirect_uris: [c.redirectUri],
      grant_types: ['authorization_code'],
      response_types: ['code'],
      token_endpoint_auth_method: 'client_secret_post',
    })),
    pkce: { required: () => true },
    claims: { openid: ['sub'], email: ['email', 'email_verified'], profile: ['name', 'groups'] },
    findAccount: async (_ctx, sub) => ({
      accountId: sub,
      claims: async () => ({ sub, email: current.email, email_verified: current.emailVerified, name: current.name, groups: current.groups }),
    }),
    features: { devInteractions: { enabled: false } },
    interactions: { url: (_ctx, interaction) => `/interaction/${interaction.uid}` },
    conformIdTokenClaims: false,
    cookies: { keys: ['test-cookie-key'] },
  });
  const callback = provider.callback();
  server.on('request', (req, res) => {
    if (!req.url?.startsWith('/interaction/')) return void callback(req, res);
    void (async () => {
      const details = await provider.interactionDetails(req, res);
      if (details.prompt.name === 'login') {
        await provider.interactionFinished(req, res, { login: { accountId: current.sub } }, { mergeWithLastSubmission: false });
        return;
      }
      const grant = new provider.Grant({ accountId: details.session!.accountId, clientId: details.params.client_id as string });
      grant.addOIDCScope('openid email profile');
      await provider.interactionFinished(req, res, { consent: { grantId: await grant.save() } }, { mergeWithLastSubmission: true });
    })().catch((err) => {
      res.statusCode = 500;
      res.end(String(err));
    });
  });

  return {
    issuer,
    setUser(u) {
      current = { sub: u.sub, email: u.email, name: u.name ?? u.sub, groups: u.groups ?? [], emailVerified: u.emailVerified ?? true };
    },
    async authorize(authorizationUrl, redirectUri) {
      const jar = new Map<string, string>();
      let url = new URL(authorizationUrl);
      for (let hops = 0; hops < 10; hops++) {
        if (url.href.startsWith(redirectUri)) return url;
        const res = await fetch(url, { redirect: 'manual', headers: { cookie: [...jar].map(([k, v]) => `${k}=${v}`).join('; ') } });
        for (const c of res.headers.getSetCookie()) {
          const [pair] = c.split(';');
          const i = pair!.indexOf('=');
          jar.set(pair!.slice(0, i), pair!.slice(i + 1));
        }
        const location = res.headers.get('location');
        if (!location) throw new Error(`IdP stopped at ${url.href}: ${res.status} ${(await res.text()).slice(0, 300)}`);
        url = new URL(location, url);
      }
      throw new Error('too many redirects');
    },
    async close() {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
