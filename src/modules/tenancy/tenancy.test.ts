import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { addMember, signup, type SignedUp } from '../../../test/helpers/auth.ts';
import { createTestPlatform, type TestPlatform } from '../../../test/helpers/test-platform.ts';
import { newId } from '../../platform/ids.ts';
import { PERMISSIONS, ROLE_PERMISSIONS } from './index.ts';

const mode = `${process.env.TEST_DATABASE_URL ? 'postgres' : 'pglite'}${process.env.TEST_REDIS_URL ? '+redis' : ''}`;

describe(`tenancy: orgs, members, invitations, RBAC (${mode})`, () => {
  let t: TestPlatform;
  let owner: SignedUp;
  let stranger: SignedUp;

  beforeAll(async () => {
    t = await createTestPlatform();
    owner = await signup(t.app, { organizationName: 'Acme' });
    stranger = await signup(t.app, { organizationName: 'Elsewhere' });
  });
  afterAll(async () => t?.close());

  const req = (who: SignedUp, method: 'GET' | 'POST' | 'PATCH' | 'DELETE', url: string, payload?: object) =>
    t.app.inject({ method, url, headers: who.auth, ...(payload ? { payload } : {}) });

  it('role → permission map: viewer reads, member writes tasks/comments, admin manages, billing bills, owner all', () => {
    expect(ROLE_PERMISSIONS.viewer.has(PERMISSIONS.projectsRead)).toBe(true);
    expect(ROLE_PERMISSIONS.viewer.has(PERMISSIONS.tasksWrite)).toBe(false);
    expect(ROLE_PERMISSIONS.member.has(PERMISSIONS.tasksWrite)).toBe(true);
    expect(ROLE_PERMISSIONS.member.has(PERMISSIONS.membersManage)).toBe(false);
    expect(ROLE_PERMISSIONS.admin.has(PERMISSIONS.membersManage)).toBe(true);
    expect(ROLE_PERMISSIONS.admin.has(PERMISSIONS.projectsManage)).toBe(true);
    expect(ROLE_PERMISSIONS.admin.has(PERMISSIONS.billingManage)).toBe(false);
    expect(ROLE_PERMISSIONS.billing.has(PERMISSIONS.billingManage)).toBe(true);
    expect(ROLE_PERMISSIONS.billing.has(PERMISSIONS.projectsRead)).toBe(false);
    expect(ROLE_PERMISSIONS.owner.size).toBe(Object.keys(PERMISSIONS).length);
  });

  it('creates, reads and renames an org; non-members get 404, not 403', async () => {
    const created = await req(owner, 'POST', '/v1/orgs', { name: 'Second' });
    expect(created.statusCode).toBe(201);
    const orgId = created.json().id;
    expect((await req(owner, 'GET', `/v1/orgs/${orgId}`)).json()).toMatchObject({ id: orgId, name: 'Second' });
    const renamed = await req(owner, 'PATCH', `/v1/orgs/${orgId}`, { name: 'Renamed' });
    expect(renamed.json().name).toBe('Renamed');
    expect((await req(stranger, 'GET', `/v1/orgs/${orgId}`)).statusCode).toBe(404);
    expect((await req(stranger, 'PATCH', `/v1/orgs/${orgId}`, { name: 'Hijacked' })).statusCode).toBe(404);
    expect((await req(owner, 'GET', `/v1/orgs/${newId()}`)).statusCode).toBe(404);
    expect((await req(owner, 'GET', '/v1/orgs/not-a-uuid')).statusCode).toBe(404);
    expect((await t.app.inject({ url: `/v1/orgs/${orgId}` })).statusCode).toBe(401);
    const me = (await req(owner, 'GET', '/v1/me')).json();
    expect(me.memberships.map((m: any) => m.orgName).sort()).toEqual(['Acme', 'Renamed']);
  });

  it('rejects mass assignment of owner, tenant and role fields', async () => {
    for (const payload of [{ name: 'X', ownerId: stranger.userId }, { name: 'X', tenantId: stranger.orgId }, { name: 'X', id: newId() }, { name: 'X', role: 'owner' }]) {
      expect((await req(owner, 'POST', '/v1/orgs', payload)).statusCode, JSON.stringify(payload)).toBe(400);
    }
    expect((await req(owner, 'PATCH', `/v1/orgs/${owner.orgId}`, { name: 'Y', tenantId: stranger.orgId })).statusCode).toBe(400);
    expect((await req(owner, 'PATCH', `/v1/orgs/${owner.orgId}/members/${owner.userId}`, { role: 'owner', userId: stranger.userId })).statusCode).toBe(400);
    expect((await req(owner, 'POST', `/v1/orgs/${owner.orgId}/invitations`, { email: 'a@example.com', role: 'member', tenantId: stranger.orgId })).statusCode).toBe(400);
    expect((await req(owner, 'GET', `/v1/orgs/${owner.orgId}`)).json().name).toBe('Acme');
  });

  it('invitations: accept once, bound to the invited email; wrong, used, revoked and expired tokens fail', async () => {
    const invitee = await signup(t.app);
    const inv = await req(owner, 'POST', `/v1/orgs/${owner.orgId}/invitations`, { email: invitee.email.toUpperCase(), role: 'member' });
    expect(inv.statusCode).toBe(201);
    const { token } = inv.json();
    expect(token).toMatch(/^pli_[0-9a-f]{32}_[A-Za-z0-9_-]{43}$/);
    expect((await req(owner, 'GET', `/v1/orgs/${owner.orgId}/invitations`)).body).not.toContain(token);

    expect((await req(stranger, 'POST', `/v1/invitations/${token}/accept`)).statusCode).toBe(403); // someone else's email
    expect((await req(invitee, 'POST', `/v1/invitations/${token.slice(0, -2)}xx/accept`)).statusCode).toBe(404);
    expect((await req(invitee, 'POST', `/v1/invitations/pli_garbage_token/accept`)).statusCode).toBe(404);
    const accepted = await req(invitee, 'POST', `/v1/invitations/${token}/accept`);
    expect(accepted.statusCode).toBe(200);
    expect(accepted.json()).toMatchObject({ orgId: owner.orgId, orgName: 'Acme', role: 'member' });
    expect((await req(invitee, 'POST', `/v1/invitations/${token}/accept`)).statusCode).toBe(409);
    expect((await req(invitee, 'GET', '/v1/me')).json().memberships).toHaveLength(2);

    // Revoked.
    const late = await signup(t.app);
    const inv2 = (await req(owner, 'POST', `/v1/orgs/${owner.orgId}/invitations`, { email: late.email, role: 'viewer' })).json();
    expect((await req(owner, 'DELETE', `/v1/orgs/${owner.orgId}/invitations/${inv2.id}`)).statusCode).toBe(204);
    expect((await req(late, 'POST', `/v1/invitations/${inv2.token}/accept`)).statusCode).toBe(404);
    // Expired (moved into the past as the owner role, in the org's tenant context).
    const inv3 = (await req(owner, 'POST', `/v1/orgs/${owner.orgId}/invitations`, { email: late.email, role: 'viewer', expiresInHours: 1 })).json();
    await t.db.owner.transaction().execute(async (trx) => {
      await sql`select set_config('app.tenant_id', ${owner.orgId}, true)`.execute(trx);
      await trx.updateTable('invitations').set({ expires_at: new Date(Date.now() - 1000) }).where('id', '=', inv3.id).execute();
    });
    const expired = await req(late, 'POST', `/v1/invitations/${inv3.token}/accept`);
    expect(expired.statusCode).toBe(410);
    expect(expired.json().code).toBe('TENANCY.INVITATION_EXPIRED');
    expect((await req(late, 'GET', '/v1/me')).json().memberships).toHaveLength(1);
    const statuses = (await req(owner, 'GET', `/v1/orgs/${owner.orgId}/invitations`)).json().data.map((i: any) => i.status);
    expect(statuses).toEqual(expect.arrayContaining(['accepted', 'revoked', 'expired']));
    expect((await req(owner, 'POST', `/v1/orgs/${owner.orgId}/invitations`, { email: 'bad', role: 'member' })).statusCode).toBe(400);
    expect((await req(owner, 'POST', `/v1/orgs/${owner.orgId}/invitations`, { email: 'a@example.com', role: 'god' })).statusCode).toBe(400);
  });

  it('two invitations for one user accepted at once: one membership, the other is 409 (not 500)', async () => {
    const org = (await req(owner, 'POST', '/v1/orgs', { name: 'Race' })).json().id as string;
    const invitee = await signup(t.app);
    const tokens: string[] = [];
    for (let i = 0; i < 6; i++) {
      const inv = await req(owner, 'POST', `/v1/orgs/${org}/invitations`, { email: invitee.email, role: 'member' });
      expect(inv.statusCode).toBe(201);
      tokens.push(inv.json().token);
    }
    const results = await Promise.all(tokens.map((tok) => req(invitee, 'POST', `/v1/invitations/${tok}/accept`)));
    const statuses = results.map((r) => r.statusCode).sort();
    expect(statuses).toEqual([200, 409, 409, 409, 409, 409]);
    for (const r of results.filter((x) => x.statusCode === 409)) expect(r.json().code).toBe('TENANCY.ALREADY_MEMBER');
  });

  it('role changes take effect on the next request', async () => {
    const bob = await signup(t.app);
    await addMember(t.app, owner, owner.orgId, bob, 'viewer');
    expect((await req(bob, 'GET', `/v1/orgs/${owner.orgId}/members`)).statusCode).toBe(200);
    const denied = await req(bob, 'POST', `/v1/orgs/${owner.orgId}/invitations`, { email: 'c@example.com', role: 'viewer' });
    expect(denied.statusCode).toBe(403);
    expect(denied.json()).toMatchObject({ code: 'AUTH.FORBIDDEN', permission: 'members:manage' });

    const promoted = await req(owner, 'PATCH', `/v1/orgs/${owner.orgId}/members/${bob.userId}`, { role: 'admin' });
    expect(promoted.statusCode).toBe(200);
    expect(promoted.json()).toMatchObject({ userId: bob.userId, role: 'admin', email: bob.email });
    expect((await req(bob, 'POST', `/v1/orgs/${owner.orgId}/invitations`, { email: 'c@example.com', role: 'viewer' })).statusCode).toBe(201);

    // An admin cannot hand out owner (or billing, which has permissions an admin lacks) nor touch an owner.
    expect((await req(bob, 'PATCH', `/v1/orgs/${owner.orgId}/members/${bob.userId}`, { role: 'owner' })).statusCode).toBe(403);
    expect((await req(bob, 'POST', `/v1/orgs/${owner.orgId}/invitations`, { email: 'd@example.com', role: 'billing' })).statusCode).toBe(403);
    expect((await req(bob, 'PATCH', `/v1/orgs/${owner.orgId}/members/${owner.userId}`, { role: 'viewer' })).statusCode).toBe(403);
    expect((await req(bob, 'DELETE', `/v1/orgs/${owner.orgId}/members/${owner.userId}`)).statusCode).toBe(403);

    await req(owner, 'PATCH', `/v1/orgs/${owner.orgId}/members/${bob.userId}`, { role: 'viewer' });
    expect((await req(bob, 'POST', `/v1/orgs/${owner.orgId}/invitations`, { email: 'e@example.com', role: 'viewer' })).statusCode).toBe(403);
    expect((await req(owner, 'PATCH', `/v1/orgs/${owner.orgId}/members/${newId()}`, { role: 'viewer' })).statusCode).toBe(404);

    // Removal: the very next request is 404 (no longer a member).
    expect((await req(owner, 'DELETE', `/v1/orgs/${owner.orgId}/members/${bob.userId}`)).statusCode).toBe(204);
    expect((await req(bob, 'GET', `/v1/orgs/${owner.orgId}`)).statusCode).toBe(404);
  });

  it('the last owner can neither leave nor be demoted; with a second owner both work', async () => {
    const solo = await signup(t.app);
    const demote = await req(solo, 'PATCH', `/v1/orgs/${solo.orgId}/members/${solo.userId}`, { role: 'admin' });
    expect(demote.statusCode).toBe(409);
    expect(demote.json().code).toBe('TENANCY.LAST_OWNER');
    expect((await req(solo, 'DELETE', `/v1/orgs/${solo.orgId}/members/${solo.userId}`)).statusCode).toBe(409);

    const coOwner = await signup(t.app);
    await addMember(t.app, solo, solo.orgId, coOwner, 'owner');
    expect((await req(solo, 'PATCH', `/v1/orgs/${solo.orgId}/members/${solo.userId}`, { role: 'admin' })).statusCode).toBe(200);
    expect((await req(coOwner, 'PATCH', `/v1/orgs/${solo.orgId}/members/${coOwner.userId}`, { role: 'member' })).statusCode).toBe(409);
    // A member may leave by deleting their own membership.
    expect((await req(solo, 'DELETE', `/v1/orgs/${solo.orgId}/members/${solo.userId}`)).statusCode).toBe(204);
    expect((await req(solo, 'GET', `/v1/orgs/${solo.orgId}`)).statusCode).toBe(404);
    const members = (await req(coOwner, 'GET', `/v1/orgs/${solo.orgId}/members`)).json().data;
    expect(members.map((m: any) => m.userId)).toEqual([coOwner.userId]);
  });

  it('members list paginates with an opaque cursor and filters by role', async () => {
    const org = (await req(owner, 'POST', '/v1/orgs', { name: 'Paged' })).json().id;
    for (let i = 0; i < 3; i++) await addMember(t.app, owner, org, await signup(t.app), i === 0 ? 'admin' : 'viewer');
    const seen: string[] = [];
    let cursor: string | null = null;
    do {
      const res = await req(owner, 'GET', `/v1/orgs/${org}/members?limit=2${cursor ? `&cursor=${cursor}` : ''}`);
      expect(res.statusCode).toBe(200);
      seen.push(...res.json().data.map((m: any) => m.userId));
      cursor = res.json().nextCursor;
    } while (cursor);
    expect(new Set(seen).size).toBe(4);
    expect((await req(owner, 'GET', `/v1/orgs/${org}/members?role=viewer`)).json().data).toHaveLength(2);
    expect((await req(owner, 'GET', `/v1/orgs/${org}/members?cursor=bogus`)).statusCode).toBe(400);
    expect((await req(owner, 'GET', `/v1/orgs/${org}/members?limit=101`)).statusCode).toBe(400);
  });

  it('list cursors use the platform format, bound to their list and filters (reused elsewhere: 400)', async () => {
    const org = (await req(owner, 'POST', '/v1/orgs', { name: 'Cursors' })).json().id;
    for (let i = 0; i < 2; i++) await addMember(t.app, owner, org, await signup(t.app), 'viewer');
    const first = (await req(owner, 'GET', `/v1/orgs/${org}/members?role=viewer&limit=1`)).json();
    expect(first.nextCursor).toEqual(expect.any(String));
    expect((await req(owner, 'GET', `/v1/orgs/${org}/members?role=viewer&limit=1&cursor=${first.nextCursor}`)).statusCode).toBe(200);
    const otherFilter = await req(owner, 'GET', `/v1/orgs/${org}/members?limit=1&cursor=${first.nextCursor}`);
    expect(otherFilter.statusCode).toBe(400);
    expect(otherFilter.json().code).toBe('HTTP.BAD_CURSOR');
    const otherList = await req(owner, 'GET', `/v1/orgs/${org}/invitations?cursor=${first.nextCursor}`);
    expect(otherList.statusCode).toBe(400);
    // A well-formed cursor whose position is not an id is refused before it reaches SQL.
    const forged = Buffer.from(JSON.stringify({ v: 1, f: 'x', k: [null, 'not-a-uuid'] })).toString('base64url');
    expect((await req(owner, 'GET', `/v1/orgs/${org}/api-keys?cursor=${forged}`)).json().code).toBe('HTTP.BAD_CURSOR');
  });

  it('RLS: app.user_id reveals only that user’s own memberships, read-only; no context shows nothing', async () => {
    const other = await signup(t.app);
    const visible = await t.db.app.transaction().execute(async (trx) => {
      await sql`select set_config('app.user_id', ${other.userId}, true)`.execute(trx);
      return {
        memberships: await trx.selectFrom('memberships').select(['tenant_id', 'user_id']).execute(),
        orgs: await trx.selectFrom('organizations').select('id').execute(),
      };
    });
    expect(visible.memberships).toEqual([{ tenant_id: other.orgId, user_id: other.userId }]);
    expect(visible.orgs).toEqual([{ id: other.orgId }]);
    expect(await t.db.app.selectFrom('memberships').selectAll().execute()).toHaveLength(0);
    // The self policy grants no writes: updating own role or inserting into another org is refused.
    const updated = await t.db.app.transaction().execute(async (trx) => {
      await sql`select set_config('app.user_id', ${other.userId}, true)`.execute(trx);
      return trx.updateTable('memberships').set({ role: 'viewer' }).where('user_id', '=', other.userId).executeTakeFirst();
    });
    expect(Number(updated.numUpdatedRows)).toBe(0);
    await expect(
      t.db.app.transaction().execute(async (trx) => {
        await sql`select set_config('app.user_id', ${other.userId}, true)`.execute(trx);
        await trx.insertInto('memberships').values({ tenant_id: owner.orgId, id: newId(), user_id: other.userId, role: 'owner' }).execute();
      }),
    ).rejects.toThrow(/row-level security/);
    expect((await req(other, 'GET', '/v1/me')).json().memberships[0].role).toBe('owner');
  });
});
