import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { addMember, bearer, signup, type SignedUp } from '../../../test/helpers/auth.ts';
import { createTestPlatform, type TestPlatform } from '../../../test/helpers/test-platform.ts';
import { SCIM } from './directory.scim.ts';

const mode = `${process.env.TEST_DATABASE_URL ? 'postgres' : 'pglite'}${process.env.TEST_REDIS_URL ? '+redis' : ''}`;
const ERROR = 'urn:ietf:params:scim:api:messages:2.0:Error';
const scimJson = { 'content-type': 'application/scim+json' };

/** RFC 7644 §3.12 error shape, and its media type. */
function expectScimError(res: { statusCode: number; headers: Record<string, unknown>; json(): any }, status: number, scimType?: string) {
  expect(res.statusCode).toBe(status);
  expect(String(res.headers['content-type'])).toMatch(/^application\/scim\+json/);
  const body = res.json();
  expect(body.schemas).toEqual([ERROR]);
  expect(body.status).toBe(String(status));
  expect(typeof body.detail).toBe('string');
  if (scimType) expect(body.scimType).toBe(scimType);
}

/** RFC 7643 §4.1 User shape as Plinth renders it. */
function expectUserResource(u: any) {
  expect(u.schemas).toEqual([SCIM.user]);
  expect(typeof u.id).toBe('string');
  expect(typeof u.userName).toBe('string');
  expect(typeof u.active).toBe('boolean');
  expect(u.emails[0]).toMatchObject({ primary: true });
  expect(u.meta).toMatchObject({ resourceType: 'User' });
  expect(u.meta.location).toMatch(new RegExp(`/scim/v2/[0-9a-f-]+/Users/${u.id}$`));
  expect(u.meta.version).toMatch(/^W\/"\d+"$/);
}

describe(`SCIM 2.0 directory sync (${mode})`, () => {
  let t: TestPlatform;
  let owner: SignedUp;
  let member: SignedUp;
  let other: SignedUp;
  let token: string;
  let otherToken: string;

  const scim = (method: string, path: string, payload?: object, tok = token, org = owner.orgId) =>
    t.app.inject({ method: method as any, url: `/scim/v2/${org}${path}`, headers: { ...bearer(tok), ...scimJson }, ...(payload ? { payload: JSON.stringify(payload) } : {}) });
  const patchOp = (...Operations: object[]) => ({ schemas: [SCIM.patch], Operations });
  const roleOf = async (userId: string) => {
    const res = await t.app.inject({ url: `/v1/orgs/${owner.orgId}/members/${userId}`, headers: owner.auth });
    return res.statusCode === 200 ? res.json().role : res.statusCode;
  };
  const auditActions = async () => {
    await t.modules.audit.sequence(owner.orgId);
    const res = await t.app.inject({ url: `/v1/orgs/${owner.orgId}/audit-events?limit=100`, headers: owner.auth });
    return res.json().data.map((e: any) => e.action) as string[];
  };

  beforeAll(async () => {
    t = await createTestPlatform();
    owner = await signup(t.app, { organizationName: 'Directory Org' });
    member = await signup(t.app);
    other = await signup(t.app, { organizationName: 'Other Org' });
    await addMember(t.app, owner, owner.orgId, member, 'member');
    const created = await t.app.inject({ method: 'POST', url: `/v1/orgs/${owner.orgId}/scim-tokens`, headers: owner.auth, payload: { name: 'Okta' } });
    expect(created.statusCode).toBe(201);
    token = created.json().token;
    otherToken = (await t.app.inject({ method: 'POST', url: `/v1/orgs/${other.orgId}/scim-tokens`, headers: other.auth, payload: { name: 'B' } })).json().token;
  });
  afterAll(async () => t?.close());

  it('tokens: an admin creates one (secret shown once), a plain member cannot, a revoked one stops at once', async () => {
    expect(token).toMatch(/^scim_[A-Za-z0-9_-]{43}$/);
    const listed = await t.app.inject({ url: `/v1/orgs/${owner.orgId}/scim-tokens`, headers: owner.auth });
    expect(listed.body).not.toContain(token);
    expect(listed.json().data[0]).toMatchObject({ name: 'Okta', createdBy: owner.userId, revokedAt: null });
    expect((await t.app.inject({ method: 'POST', url: `/v1/orgs/${owner.orgId}/scim-tokens`, headers: member.auth, payload: { name: 'x' } })).statusCode).toBe(403);
    expect((await t.app.inject({ method: 'POST', url: `/v1/orgs/${owner.orgId}/scim-tokens`, headers: owner.auth, payload: { name: '' } })).statusCode).toBe(400);

    const extra = (await t.app.inject({ method: 'POST', url: `/v1/orgs/${owner.orgId}/scim-tokens`, headers: owner.auth, payload: { name: 'temp' } })).json();
    expect((await scim('GET', '/Users', undefined, extra.token)).statusCode).toBe(200);
    expect((await t.app.inject({ method: 'DELETE', url: `/v1/orgs/${owner.orgId}/scim-tokens/${extra.id}`, headers: owner.auth })).statusCode).toBe(204);
    expectScimError(await scim('GET', '/Users', undefined, extra.token), 401);
    expect((await t.app.inject({ method: 'DELETE', url: `/v1/orgs/${owner.orgId}/scim-tokens/${extra.id}`, headers: owner.auth })).statusCode).toBe(404);
  });

  it('refuses a missing, malformed, session or other-org token with 401 in the SCIM error schema, never data', async () => {
    const none = await t.app.inject({ url: `/scim/v2/${owner.orgId}/Users` });
    expectScimError(none, 401);
    expect(none.headers['www-authenticate']).toMatch(/^Bearer/);
    expectScimError(await scim('GET', '/Users', undefined, 'scim_nope'), 401);
    expectScimError(await scim('GET', '/Users', undefined, owner.token), 401);
    expectScimError(await scim('GET', '/Users', undefined, token, 'not-a-uuid'), 401);
    // org B's token on org A's path (and A's token on B's path): no token found in that org's context
    const crossed = await scim('GET', '/Users', undefined, otherToken);
    expectScimError(crossed, 401);
    expectScimError(await scim('POST', '/Users', { schemas: [SCIM.user], userName: 'intruder@example.com' }, otherToken), 401);
    expectScimError(await scim('GET', '/Users', undefined, token, other.orgId), 401);
  });

  it('provisions a user (RFC 7643 shape, 201 + Location), links by e-mail, refuses duplicates and bad input', async () => {
    const res = await scim('POST', '/Users', {
      schemas: [SCIM.user, 'urn:ietf:params:scim:schemas:extension:enterprise:2.0:User'],
      userName: 'Ada.Lovelace@example.com',
      externalId: 'okta-1',
      name: { givenName: 'Ada', familyName: 'Lovelace' },
      emails: [{ value: 'ada.lovelace@example.com', primary: true, type: 'work' }],
      'urn:ietf:params:scim:schemas:extension:enterprise:2.0:User': { department: 'R&D' },
    });
    expect(res.statusCode).toBe(201);
    expect(String(res.headers['content-type'])).toMatch(/^application\/scim\+json/);
    const u = res.json();
    expectUserResource(u);
    expect(res.headers.location).toBe(u.meta.location);
    expect(u).toMatchObject({ userName: 'Ada.Lovelace@example.com', externalId: 'okta-1', active: true, name: { givenName: 'Ada', familyName: 'Lovelace', formatted: 'Ada Lovelace' }, groups: [] });
    const got = await scim('GET', `/Users/${u.id}`);
    expect(got.json()).toEqual(u);

    // userName is case-insensitive (RFC 7643 §4.1.1): a second one is a uniqueness conflict
    expectScimError(await scim('POST', '/Users', { schemas: [SCIM.user], userName: 'ada.lovelace@EXAMPLE.com' }), 409, 'uniqueness');
    expectScimError(await scim('POST', '/Users', { schemas: [SCIM.user] }), 400, 'invalidValue');
    expectScimError(await scim('POST', '/Users', { schemas: [SCIM.user], userName: 'no-email-here' }), 400, 'invalidValue');
    expectScimError(await scim('POST', '/Users', { schemas: [SCIM.user], userName: 'x@example.com', active: 'maybe' }), 400, 'invalidValue');
    const bad = await t.app.inject({ method: 'POST', url: `/scim/v2/${owner.orgId}/Users`, headers: { ...bearer(token), ...scimJson }, payload: '{"userName": ' });
    expectScimError(bad, 400, 'invalidSyntax');
    expectScimError(await scim('GET', '/Users/00000000-0000-7000-8000-000000000000'), 404);
    expectScimError(await scim('GET', '/Users/not-an-id'), 404);
  });

  it('lists with filter userName eq and startIndex/count pagination (ListResponse)', async () => {
    for (const n of [1, 2, 3]) expect((await scim('POST', '/Users', { schemas: [SCIM.user], userName: `page${n}@example.com` })).statusCode).toBe(201);
    const all = (await scim('GET', '/Users')).json();
    expect(all.schemas).toEqual([SCIM.list]);
    expect(all).toMatchObject({ startIndex: 1, totalResults: all.Resources.length, itemsPerPage: all.Resources.length });
    expect(all.totalResults).toBeGreaterThanOrEqual(4);

    const page = (await scim('GET', '/Users?startIndex=2&count=2')).json();
    expect(page).toMatchObject({ startIndex: 2, itemsPerPage: 2, totalResults: all.totalResults });
    expect(page.Resources.map((r: any) => r.id)).toEqual(all.Resources.slice(1, 3).map((r: any) => r.id));
    const countOnly = (await scim('GET', '/Users?count=0')).json();
    expect(countOnly).toMatchObject({ totalResults: all.totalResults, itemsPerPage: 0, Resources: [] });
    const clamped = (await scim('GET', '/Users?startIndex=-5&count=100000')).json();
    expect(clamped.startIndex).toBe(1);

    const filtered = (await scim('GET', `/Users?filter=${encodeURIComponent('userName eq "PAGE2@example.com"')}`)).json();
    expect(filtered.totalResults).toBe(1);
    expect(filtered.Resources[0].userName).toBe('page2@example.com');
    expect((await scim('GET', `/Users?filter=${encodeURIComponent('userName eq "nobody@example.com"')}`)).json()).toMatchObject({ totalResults: 0, Resources: [] });
    for (const f of ['userName co "page"', 'emails eq "x"', 'userName eq page2', 'userName eq "a" or userName eq "b"']) {
      expectScimError(await scim('GET', `/Users?filter=${encodeURIComponent(f)}`), 400, 'invalidFilter');
    }
  });

  it('PATCH (add/replace/remove, IdP spellings) and PUT change the user; bad operations fail with their scimType and change nothing', async () => {
    const u = (await scim('POST', '/Users', { schemas: [SCIM.user], userName: 'patchme@example.com', displayName: 'Patch Me' })).json();
    const res = await scim('PATCH', `/Users/${u.id}`, patchOp(
      { op: 'Replace', path: 'displayName', value: 'Patched' },
      { op: 'add', path: 'name.givenName', value: 'Pat' },
      { op: 'replace', value: { externalId: 'ext-9', 'name.familyName': 'Ch' } },
      { op: 'replace', path: 'emails[type eq "work"].value', value: 'patched@example.com' },
    ));
    expect(res.statusCode).toBe(200);
    expect(res.json()).toMatchObject({ displayName: 'Patched', externalId: 'ext-9', name: { givenName: 'Pat', familyName: 'Ch' }, emails: [{ value: 'patched@example.com' }], meta: { version: 'W/"2"' } });
    const removed = (await scim('PATCH', `/Users/${u.id}`, patchOp({ op: 'remove', path: 'externalId' }))).json();
    expect(removed).not.toHaveProperty('externalId');

    expectScimError(await scim('PATCH', `/Users/${u.id}`, { Operations: [{ op: 'replace', path: 'active', value: false }] }), 400, 'invalidSyntax');
    expectScimError(await scim('PATCH', `/Users/${u.id}`, patchOp({ op: 'move', path: 'displayName' })), 400, 'invalidSyntax');
    expectScimError(await scim('PATCH', `/Users/${u.id}`, patchOp({ op: 'replace', path: 'password', value: 'x' })), 400, 'invalidPath');
    expectScimError(await scim('PATCH', `/Users/${u.id}`, patchOp({ op: 'remove' })), 400, 'noTarget');
    expectScimError(await scim('PATCH', `/Users/${u.id}`, patchOp({ op: 'remove', path: 'userName' })), 400, 'mutability');
    // all or nothing: a valid first op with an invalid second one changes nothing
    expectScimError(await scim('PATCH', `/Users/${u.id}`, patchOp({ op: 'replace', path: 'displayName', value: 'Half' }, { op: 'replace', path: 'nope', value: 1 })), 400, 'invalidPath');
    expect((await scim('GET', `/Users/${u.id}`)).json().displayName).toBe('Patched');

    const put = await scim('PUT', `/Users/${u.id}`, { schemas: [SCIM.user], userName: 'patchme@example.com', emails: [{ value: 'put@example.com' }] });
    expect(put.statusCode).toBe(200);
    expect(put.json()).toMatchObject({ userName: 'patchme@example.com', emails: [{ value: 'put@example.com' }], active: true });
    expect(put.json()).not.toHaveProperty('displayName');
  });

  it('groups map to roles; deprovisioning (active:false, DELETE) ends membership, API keys and sessions at once', async () => {
    // an existing account (with a session) is linked by e-mail
    const existing = await signup(t.app);
    const linked = (await scim('POST', '/Users', { schemas: [SCIM.user], userName: existing.email })).json();
    expect(await roleOf(existing.userId)).toBe('member');

    const mapping = await t.app.inject({ method: 'PUT', url: `/v1/orgs/${owner.orgId}/scim-group-roles`, headers: owner.auth, payload: { mappings: [{ group: 'Admins', role: 'admin' }, { group: 'Readers', role: 'viewer' }] } });
    expect(mapping.statusCode).toBe(200);
    expect((await t.app.inject({ method: 'PUT', url: `/v1/orgs/${owner.orgId}/scim-group-roles`, headers: owner.auth, payload: { mappings: [{ group: 'x', role: 'owner' }] } })).statusCode).toBe(400);
    expect((await t.app.inject({ method: 'PUT', url: `/v1/orgs/${owner.orgId}/scim-group-roles`, headers: member.auth, payload: { mappings: [] } })).statusCode).toBe(403);

    const group = await scim('POST', '/Groups', { schemas: [SCIM.group], displayName: 'Admins', members: [{ value: linked.id }] });
    expect(group.statusCode).toBe(201);
    expect(group.json()).toMatchObject({ schemas: [SCIM.group], displayName: 'Admins', members: [{ value: linked.id, display: existing.email }], meta: { resourceType: 'Group' } });
    expect(await roleOf(existing.userId)).toBe('admin');
    expect((await scim('GET', `/Users/${linked.id}`)).json().groups).toEqual([expect.objectContaining({ value: group.json().id, display: 'Admins' })]);
    expectScimError(await scim('POST', '/Groups', { schemas: [SCIM.group], displayName: 'Admins' }), 409, 'uniqueness');
    expectScimError(await scim('POST', '/Groups', { schemas: [SCIM.group], displayName: 'Ghosts', members: [{ value: '00000000-0000-7000-8000-000000000000' }] }), 400, 'invalidValue');
    const listed = (await scim('GET', `/Groups?filter=${encodeURIComponent('displayName eq "Admins"')}`)).json();
    expect(listed).toMatchObject({ schemas: [SCIM.list], totalResults: 1 });

    // as admin the linked user creates an API key; the key and the session both work
    const key = await t.app.inject({ method: 'POST', url: `/v1/orgs/${owner.orgId}/api-keys`, headers: existing.auth, payload: { name: 'mine', scopes: ['org:read'] } });
    expect(key.statusCode).toBe(201);
    const keyAuth = bearer(key.json().secret);
    expect((await t.app.inject({ url: `/v1/orgs/${owner.orgId}`, headers: keyAuth })).statusCode).toBe(200);

    // removing the user from the group (filtered path) demotes them
    const gid = group.json().id;
    const patched = await scim('PATCH', `/Groups/${gid}`, patchOp({ op: 'remove', path: `members[value eq "${linked.id}"]` }));
    expect(patched.statusCode).toBe(200);
    expect(patched.json().members).toEqual([]);
    expect(await roleOf(existing.userId)).toBe('member');
    expect((await scim('PATCH', `/Groups/${gid}`, patchOp({ op: 'add', path: 'members', value: [{ value: linked.id }] }))).json().members).toHaveLength(1);
    expect(await roleOf(existing.userId)).toBe('admin');

    // deprovision (Azure-style: op "Replace", no path, "False")
    const off = await scim('PATCH', `/Users/${linked.id}`, patchOp({ op: 'Replace', value: { active: 'False' } }));
    expect(off.statusCode).toBe(200);
    expect(off.json().active).toBe(false);
    expect(await roleOf(existing.userId)).toBe(404);
    expect((await t.app.inject({ url: `/v1/orgs/${owner.orgId}`, headers: keyAuth })).statusCode).toBe(401);
    expect((await t.app.inject({ url: '/v1/me', headers: existing.auth })).statusCode).toBe(401);

    // reactivation restores the mapped role (not the old key or session)
    expect((await scim('PATCH', `/Users/${linked.id}`, patchOp({ op: 'replace', path: 'active', value: true }))).statusCode).toBe(200);
    expect(await roleOf(existing.userId)).toBe('admin');
    expect((await t.app.inject({ url: `/v1/orgs/${owner.orgId}`, headers: keyAuth })).statusCode).toBe(401);

    // group deleted → role recomputed; user deleted → gone, membership ended
    expect((await scim('DELETE', `/Groups/${gid}`)).statusCode).toBe(204);
    expect(await roleOf(existing.userId)).toBe('member');
    expect((await scim('DELETE', `/Users/${linked.id}`)).statusCode).toBe(204);
    expectScimError(await scim('GET', `/Users/${linked.id}`), 404);
    expectScimError(await scim('DELETE', `/Users/${linked.id}`), 404);
    expect(await roleOf(existing.userId)).toBe(404);

    const actions = await auditActions();
    for (const a of ['scim.token_created', 'scim.token_revoked', 'scim.user_created', 'scim.user_updated', 'scim.user_deactivated', 'scim.user_reactivated', 'scim.user_deleted', 'scim.group_created', 'scim.group_updated', 'scim.group_deleted', 'scim.group_roles_set', 'member.provisioned', 'member.deprovisioned']) {
      expect(actions, a).toContain(a);
    }
  });

  it("org A's token never reaches org B's resources: B's user id on A's path is 404, B's path is 401", async () => {
    const bUser = (await scim('POST', '/Users', { schemas: [SCIM.user], userName: 'b-secret@example.com' }, otherToken, other.orgId)).json();
    expect(bUser.id).toBeTruthy();
    for (const [method, body] of [['GET', undefined], ['PUT', { schemas: [SCIM.user], userName: 'stolen@example.com' }], ['PATCH', patchOp({ op: 'replace', path: 'active', value: false })], ['DELETE', undefined]] as const) {
      const res = await scim(method, `/Users/${bUser.id}`, body);
      expectScimError(res, 404);
      expect(res.body).not.toContain('b-secret');
      const crossed = await scim(method, `/Users/${bUser.id}`, body, token, other.orgId);
      expectScimError(crossed, 401);
      expect(crossed.body).not.toContain('b-secret');
    }
    const listA = (await scim('GET', `/Users?filter=${encodeURIComponent('userName eq "b-secret@example.com"')}`)).json();
    expect(listA.totalResults).toBe(0);
    expect((await scim('GET', `/Users/${bUser.id}`, undefined, otherToken, other.orgId)).json().active).toBe(true);
  });

  it('the last owner cannot be deprovisioned by the directory', async () => {
    const u = (await scim('POST', '/Users', { schemas: [SCIM.user], userName: owner.email })).json();
    expect(await roleOf(owner.userId)).toBe('owner');
    expectScimError(await scim('PATCH', `/Users/${u.id}`, patchOp({ op: 'replace', path: 'active', value: false })), 409);
    expect(await roleOf(owner.userId)).toBe('owner');
    expect((await scim('GET', `/Users/${u.id}`)).json().active).toBe(true);
  });
});
