import { randomBytes } from 'node:crypto';
import type { App } from '../../src/platform/http/server.ts';

export const STRONG_PASSWORD = 'correct horse battery staple 9';

export interface SignedUp {
  token: string;
  userId: string;
  orgId: string;
  email: string;
  password: string;
  auth: { authorization: string };
}

export const bearer = (token: string) => ({ authorization: `Bearer ${token}` });

/** Signs up a fresh user with their own org through the real HTTP route. */
export async function signup(app: App, overrides: Partial<{ email: string; password: string; name: string; organizationName: string }> = {}): Promise<SignedUp> {
  const email = overrides.email ?? `user-${randomBytes(6).toString('hex')}@example.com`;
  const password = overrides.password ?? STRONG_PASSWORD;
  const res = await app.inject({
    method: 'POST',
    url: '/v1/auth/signup',
    payload: { email, password, name: overrides.name ?? 'Test User', organizationName: overrides.organizationName ?? 'Test Org' },
  });
  if (res.statusCode !== 201) throw new Error(`signup failed: ${res.statusCode} ${res.body}`);
  const body = res.json();
  return { token: body.token, userId: body.user.id, orgId: body.organization.id, email, password, auth: bearer(body.token) };
}

/** Invites `email` into `orgId` with `role` (as `inviter`) and accepts it as `invitee`. */
export async function addMember(app: App, inviter: SignedUp, orgId: string, invitee: SignedUp, role: string): Promise<void> {
  const inv = await app.inject({ method: 'POST', url: `/v1/orgs/${orgId}/invitations`, headers: inviter.auth, payload: { email: invitee.email, role } });
  if (inv.statusCode !== 201) throw new Error(`invite failed: ${inv.statusCode} ${inv.body}`);
  const acc = await app.inject({ method: 'POST', url: `/v1/invitations/${inv.json().token}/accept`, headers: invitee.auth });
  if (acc.statusCode !== 200) throw new Error(`accept failed: ${acc.statusCode} ${acc.body}`);
}
