import { createHash } from 'node:crypto';
import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { addMember, bearer, signup, type SignedUp } from '../../../test/helpers/auth.ts';
import { createTestPlatform, type TestPlatform } from '../../../test/helpers/test-platform.ts';
import { runAdminCommand } from '../identity/index.ts';

const mode = `${process.env.TEST_DATABASE_URL ? 'postgres' : 'pglite'}${process.env.TEST_REDIS_URL ? '+redis' : ''}`;

describe(`API keys (${mode})`, () => {
  let t: TestPlatform;
  let owner: SignedUp;
  let admin: SignedUp;
  let otherOrg: SignedUp;

  beforeAll(async () => {
    t = await createTestPlatform();
    owner = await signup(t.app, { organizationName: 'Keyed' });
    admin = await signup(t.app);
    otherOrg = await signup(t.app);
    await addMember(t.app, owner, owner.orgId, admin, 'admin');
  });
  afterAll(async () => t?.close());

  const create = (who: SignedUp, payload: object, org = owner.orgId) =>
    t.app.inject({ method: 'POST', url: `/v1/orgs/${org}/api-keys`, headers: who.auth, payload });
  const get = (token: string, url: string) => t.app.inject({ url, headers: bearer(token) });

  it('returns the secret once, stores only its hash, and shows the prefix afterwards', async () => {
    const res = await create(owner, { name: 'CI', scopes: ['org:read', 'members:read'] });
    expect(res.statusCode).toBe(201);
    const key = res.json();
    expect(key.secret).toMatch(/^plk_[0-9a-f]{32}_[A-Za-z0-9_-]{43}$/);
    expect(key.secret.startsWith(key.prefix)).toBe(true);
    expect(key).toMatchObject({ name: 'CI', scopes: ['members:read', 'org:read'], createdBy: owner.userId, lastUsedAt: null, revokedAt: null });

    const listed = await get(owner.token, `/v1/orgs/${owner.orgId}/api-keys`);
    expect(listed.body).not.toContain(key.secret);
    expect(listed.json().data[0]).not.toHaveProperty('secret');
    expect(listed.json().data[0].prefix).toBe(key.prefix);
    const stored = await t.db.withTenant(owner.orgId, (trx) => trx.selectFrom('api_keys').selectAll().where('id', '=', key.id).executeTakeFirstOrThrow());
    expect(JSON.stringify(stored)).not.toContain(key.secret);
    expect(stored.key_hash).toBe(createHash('sha256').update(key.secret).digest('hex'));
  });

  it('acts in its own org with scopes ∩ the creator’s current permissions, records last use, and dies on revocation', async () => {
    const key = (await create(admin, { name: 'reader', scopes: ['org:read', 'members:read', 'org:manage'] })).json();
    expect((await get(key.secret, `/v1/orgs/${owner.orgId}`)).statusCode).toBe(200);
    expect((await get(key.secret, `/v1/orgs/${owner.orgId}/members`)).statusCode).toBe(200);
    // Not in its scopes (admin has it, the key does not): 403.
    expect((await get(key.secret, `/v1/orgs/${owner.orgId}/audit-events`)).statusCode).toBe(403);
    // Another org, even one the creator could join: 404. Account routes: not for keys.
    expect((await get(key.secret, `/v1/orgs/${otherOrg.orgId}`)).statusCode).toBe(404);
    expect((await get(key.secret, '/v1/me')).statusCode).toBe(403);
    const used = (await get(owner.token, `/v1/orgs/${owner.orgId}/api-keys/${key.id}`)).json();
    expect(new Date(used.lastUsedAt).getTime()).toBeGreaterThan(Date.now() - 60_000);

    // The creator demoted to member (no org:manage): the key loses it on the next request, and regains it.
    const rename = () => t.app.inject({ method: 'PATCH', url: `/v1/orgs/${owner.orgId}`, headers: bearer(key.secret), payload: { name: 'Keyed' } });
    expect((await rename()).statusCode).toBe(200);
    await t.app.inject({ method: 'PATCH', url: `/v1/orgs/${owner.orgId}/members/${admin.userId}`, headers: owner.auth, payload: { role: 'member' } });
    expect((await rename()).statusCode).toBe(403);
    await t.app.inject({ method: 'PATCH', url: `/v1/orgs/${owner.orgId}/members/${admin.userId}`, headers: owner.auth, payload: { role: 'admin' } });
    expect((await rename()).statusCode).toBe(200);

    // Audit records the key as the actor.
    const writer = (await create(owner, { name: 'writer', scopes: ['org:manage', 'org:read'] })).json();
    const patched = await t.app.inject({ method: 'PATCH', url: `/v1/orgs/${owner.orgId}`, headers: bearer(writer.secret), payload: { name: 'Renamed by key' } });
    expect(patched.statusCode).toBe(200);
    const events = (await get(owner.token, `/v1/orgs/${owner.orgId}/audit-events?action=org.updated`)).json().data;
    expect(events[0].actor).toEqual({ type: 'api_key', id: writer.id, userId: owner.userId });

    expect((await t.app.inject({ method: 'DELETE', url: `/v1/orgs/${owner.orgId}/api-keys/${key.id}`, headers: owner.auth })).statusCode).toBe(204);
    expect((await get(key.secret, `/v1/orgs/${owner.orgId}`)).statusCode).toBe(401);
    expect((await t.app.inject({ method: 'DELETE', url: `/v1/orgs/${owner.orgId}/api-keys/${key.id}`, headers: owner.auth })).statusCode).toBe(404);
    expect((await get(owner.token, `/v1/orgs/${owner.orgId}/api-keys/${key.id}`)).json().revokedAt).not.toBeNull();
  });

  it('scopes must be known (422) and held by the creator (403); members cannot manage keys', async () => {
    const unknown = await create(owner, { name: 'x', scopes: ['root:everything'] });
    expect(unknown.statusCode).toBe(422);
    expect(unknown.json().code).toBe('TENANCY.UNKNOWN_SCOPE');
    const notHeld = await create(admin, { name: 'x', scopes: ['billing:manage'] });
    expect(notHeld.statusCode).toBe(403);
    expect(notHeld.json().code).toBe('TENANCY.SCOPE_NOT_HELD');
    expect((await create(owner, { name: 'x', scopes: [] })).statusCode).toBe(400);
    expect((await create(owner, { name: 'x', scopes: ['org:read'], expiresAt: '2001-01-01T00:00:00Z' })).statusCode).toBe(422);
    expect((await create(owner, { name: 'x', scopes: ['org:read'], tenantId: otherOrg.orgId })).statusCode).toBe(400);
    expect((await create(owner, { name: 'x', scopes: ['org:read'], createdBy: admin.userId })).statusCode).toBe(400);
    const member = await signup(t.app);
    await addMember(t.app, owner, owner.orgId, member, 'member');
    expect((await create(member, { name: 'x', scopes: ['org:read'] })).statusCode).toBe(403);
  });

  it('an expired key, or one whose creator is removed or disabled, is refused', async () => {
    const expiring = (await create(owner, { name: 'soon', scopes: ['org:read'], expiresAt: new Date(Date.now() + 3_600_000).toISOString() })).json();
    expect((await get(expiring.secret, `/v1/orgs/${owner.orgId}`)).statusCode).toBe(200);
    await t.db.owner.transaction().execute(async (trx) => {
      await sql`select set_config('app.tenant_id', ${owner.orgId}, true)`.execute(trx);
      await trx.updateTable('api_keys').set({ expires_at: new Date(Date.now() - 1000) }).where('tenant_id', '=', owner.orgId).where('id', '=', expiring.id).execute();
    });
    expect((await get(expiring.secret, `/v1/orgs/${owner.orgId}`)).statusCode).toBe(401);

    const temp = await signup(t.app);
    await addMember(t.app, owner, owner.orgId, temp, 'admin');
    const k1 = (await create(temp, { name: 'temp', scopes: ['org:read'] })).json();
    expect((await get(k1.secret, `/v1/orgs/${owner.orgId}`)).statusCode).toBe(200);
    await t.app.inject({ method: 'DELETE', url: `/v1/orgs/${owner.orgId}/members/${temp.userId}`, headers: owner.auth });
    // revoked at removal: the key itself is dead (401), not merely without a membership
    expect((await get(k1.secret, `/v1/orgs/${owner.orgId}`)).statusCode).toBe(401);

    const k2 = (await create(admin, { name: 'admin key', scopes: ['org:read'] })).json();
    const root = await signup(t.app);
    await runAdminCommand(t.modules.identity, ['grant', root.email], () => {});
    await t.app.inject({ method: 'POST', url: `/v1/admin/users/${admin.userId}/disable`, headers: root.auth });
    expect((await get(k2.secret, `/v1/orgs/${owner.orgId}`)).statusCode).toBe(401);
  });

  it('removal revokes the member\'s keys for good: re-inviting them does not bring a key back', async () => {
    const temp = await signup(t.app);
    await addMember(t.app, owner, owner.orgId, temp, 'admin');
    const key = (await create(temp, { name: 'leaver', scopes: ['org:read'] })).json();
    expect((await get(key.secret, `/v1/orgs/${owner.orgId}`)).statusCode).toBe(200);
    expect((await t.app.inject({ method: 'DELETE', url: `/v1/orgs/${owner.orgId}/members/${temp.userId}`, headers: owner.auth })).statusCode).toBe(204);
    const listed = (await t.app.inject({ url: `/v1/orgs/${owner.orgId}/api-keys/${key.id}`, headers: owner.auth })).json();
    expect(listed.revokedAt).toEqual(expect.any(String));
    await addMember(t.app, owner, owner.orgId, temp, 'admin');
    expect((await get(key.secret, `/v1/orgs/${owner.orgId}`)).statusCode).toBe(401);
  });

  it('disabling revokes the user\'s keys and sessions; re-enabling revives neither', async () => {
    const user = await signup(t.app);
    await addMember(t.app, owner, owner.orgId, user, 'admin');
    const own = (await create(user, { name: 'own org', scopes: ['org:read'] }, user.orgId)).json();
    const shared = (await create(user, { name: 'shared org', scopes: ['org:read'] })).json();
    const root = await signup(t.app);
    await runAdminCommand(t.modules.identity, ['grant', root.email], () => {});
    expect((await t.app.inject({ method: 'POST', url: `/v1/admin/users/${user.userId}/disable`, headers: root.auth })).statusCode).toBe(200);
    expect((await t.app.inject({ method: 'POST', url: `/v1/admin/users/${user.userId}/enable`, headers: root.auth })).statusCode).toBe(200);
    expect((await get(own.secret, `/v1/orgs/${user.orgId}`)).statusCode).toBe(401);
    expect((await get(shared.secret, `/v1/orgs/${owner.orgId}`)).statusCode).toBe(401);
    expect((await get(user.token, '/v1/me')).statusCode).toBe(401);
    // the account itself works again: a new login, and new keys
    const login = await t.app.inject({ method: 'POST', url: '/v1/auth/login', payload: { email: user.email, password: user.password } });
    expect(login.statusCode).toBe(200);
    const fresh = (await create({ ...user, auth: bearer(login.json().token) }, { name: 'new', scopes: ['org:read'] }, user.orgId)).json();
    expect((await get(fresh.secret, `/v1/orgs/${user.orgId}`)).statusCode).toBe(200);
  });
});
