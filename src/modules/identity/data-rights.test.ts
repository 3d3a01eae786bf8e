import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { addMember, bearer, signup, type SignedUp } from '../../../test/helpers/auth.ts';
import { adminAndMember, waitFor } from '../../../test/helpers/jobs.ts';
import { createTestPlatform, type TestPlatform } from '../../../test/helpers/test-platform.ts';

const mode = `${process.env.TEST_DATABASE_URL ? 'postgres' : 'pglite'}${process.env.TEST_REDIS_URL ? '+redis' : ''}`;

describe(`data subject rights: export and erasure (${mode})`, () => {
  let t: TestPlatform;
  let owner: SignedUp;
  let subject: SignedUp;
  let admin: { authorization: string };
  let keySecret: string;

  const download = async (url: string) => t.app.inject({ url: url.replace(/^https?:\/\/[^/]+/, '') });
  const auditOf = async (orgId: string, who: { authorization: string }) =>
    (await t.app.inject({ url: `/v1/orgs/${orgId}/audit-events?limit=100`, headers: who })).json().data as Array<Record<string, any>>;

  beforeAll(async () => {
    t = await createTestPlatform();
    ({ admin } = await adminAndMember(t));
    owner = await signup(t.app, { organizationName: 'Acme' });
    subject = await signup(t.app, { name: 'Erin Subject', organizationName: 'Erin Solo' });
    // The owner invites the subject (the address is personal data about them, in Acme's chain) and they join.
    await addMember(t.app, owner, owner.orgId, subject, 'member');
  });
  afterAll(async () => t?.close());

  it('the audit log keeps personal values outside the hashed record and lists them merged back', async () => {
    await t.modules.audit.sequence();
    const events = await auditOf(subject.orgId, subject.auth);
    const signedUp = events.find((e) => e.action === 'user.signed_up')!;
    expect(signedUp.changes).toEqual({ email: { to: subject.email } });
    expect(signedUp.ip).toBe('127.0.0.1');
    expect(signedUp.pdRef).toMatch(/^[0-9a-f-]{36}$/);
    const stored = await t.db.owner.transaction().execute(async (trx) => {
      await trx.executeQuery({ sql: `select set_config('app.tenant_id', $1, true)`, parameters: [subject.orgId], query: undefined as never, queryId: undefined as never });
      return trx.selectFrom('audit_events').select(['ip', 'changes', 'pd_ref']).where('id', '=', signedUp.id).executeTakeFirstOrThrow();
    });
    expect(stored.ip).toBeNull();
    expect(JSON.stringify(stored.changes)).not.toContain(subject.email);
  });

  it('export: the user downloads everything held about them as JSON through an expiring link', async () => {
    const res = await t.app.inject({ method: 'POST', url: '/v1/me/data-export', headers: subject.auth });
    expect(res.statusCode, res.body).toBe(201);
    const file = await download(res.json().url);
    expect(file.statusCode).toBe(200);
    const doc = JSON.parse(file.body);
    expect(doc.format).toBe('plinth.data-subject-export.v1');
    expect(doc.identity.account).toMatchObject({ id: subject.userId, email: subject.email, name: 'Erin Subject' });
    expect(doc.identity.sessions.length).toBeGreaterThan(0);
    expect(JSON.stringify(doc)).not.toMatch(/password_hash|token_hash|secret/);
    expect(doc.organizations.memberships.map((m: any) => m.orgId).sort()).toEqual([owner.orgId, subject.orgId].sort());
    const actions = doc.audit.events.map((e: any) => `${e.orgId === owner.orgId ? 'acme' : e.orgId === subject.orgId ? 'solo' : 'platform'}:${e.action}`);
    expect(actions).toEqual(expect.arrayContaining(['solo:user.signed_up', 'acme:invitation.created', 'acme:invitation.accepted']));
    // personal data about others in the same chain is not part of this user's export
    expect(JSON.stringify(doc)).not.toContain(owner.email);
    expect(doc.audit.events.find((e: any) => e.action === 'invitation.created').changes.email).toEqual({ to: subject.email });
    // a link for someone else's export is not handed out: the admin route is platform-admin only
    expect((await t.app.inject({ method: 'POST', url: `/v1/admin/users/${subject.userId}/data-export`, headers: owner.auth })).statusCode).toBe(403);
    const byAdmin = await t.app.inject({ method: 'POST', url: `/v1/admin/users/${subject.userId}/data-export`, headers: admin });
    expect(byAdmin.statusCode).toBe(201);
  });

  it('erasure: refused without the right confirmation, for API keys, and while the user is an org’s last owner with others in it', async () => {
    const mismatch = await t.app.inject({ method: 'POST', url: '/v1/me/erase', headers: subject.auth, payload: { confirmEmail: owner.email } });
    expect(mismatch.statusCode).toBe(422);
    const key = await t.app.inject({ method: 'POST', url: `/v1/orgs/${subject.orgId}/api-keys`, headers: subject.auth, payload: { name: 'erin laptop', scopes: ['org:read'] } });
    expect(key.statusCode, key.body).toBe(201);
    keySecret = key.json().secret;
    const viaKey = await t.app.inject({ method: 'POST', url: '/v1/me/erase', headers: bearer(key.json().secret), payload: { confirmEmail: subject.email } });
    expect(viaKey.statusCode).toBe(403);
    expect(viaKey.json().code).toBe('AUTH.SESSION_REQUIRED');
    const extra = await t.app.inject({ method: 'POST', url: '/v1/me/erase', headers: subject.auth, payload: { confirmEmail: subject.email, force: true } });
    expect(extra.statusCode).toBe(400);
    // the owner of Acme (where the subject is a member) cannot be erased until someone else owns it
    const ownerErase = await t.app.inject({ method: 'POST', url: `/v1/admin/users/${owner.userId}/erase`, headers: admin });
    expect(ownerErase.statusCode).toBe(409);
    expect(ownerErase.json().code).toBe('TENANCY.LAST_OWNER');
    expect((await t.app.inject({ method: 'POST', url: `/v1/admin/users/00000000-0000-7000-8000-000000000000/erase`, headers: admin })).statusCode).toBe(404);
  });

  it('erasure: account anonymized, sessions dead, audit personal data blanked everywhere, memberships gone, and the chains still verify', async () => {
    const other = await t.app.inject({ method: 'POST', url: '/v1/auth/login', payload: { email: subject.email, password: subject.password } });
    const res = await t.app.inject({ method: 'POST', url: '/v1/me/erase', headers: subject.auth, payload: { confirmEmail: subject.email.toUpperCase() } });
    expect(res.statusCode, res.body).toBe(200);
    expect(res.json().auditRecordsErased).toBeGreaterThan(1);
    expect((await t.app.inject({ url: '/v1/me', headers: subject.auth })).statusCode).toBe(401);
    expect((await t.app.inject({ url: '/v1/me', headers: bearer(other.json().token) })).statusCode).toBe(401);
    expect((await t.app.inject({ url: `/v1/orgs/${subject.orgId}`, headers: bearer(keySecret) })).statusCode).toBe(401);
    const login = await t.app.inject({ method: 'POST', url: '/v1/auth/login', payload: { email: subject.email, password: subject.password } });
    expect(login.statusCode).toBe(401);
    const row = await t.db.owner.selectFrom('users').select(['email', 'name', 'erased_at']).where('id', '=', subject.userId).executeTakeFirstOrThrow();
    expect(row.email).not.toContain(subject.email.split('@')[0]);
    expect(row.name).toBe('Erased user');
    expect(row.erased_at).not.toBeNull();
    const ips = await t.db.owner.selectFrom('sessions').select(['ip', 'user_agent']).where('user_id', '=', subject.userId).execute();
    expect(ips.every((s) => s.ip === null && s.user_agent === null)).toBe(true);

    // the invitation (Acme's chain) no longer shows the address; the event and its hash are still there
    await t.modules.audit.sequence();
    const acme = await auditOf(owner.orgId, owner.auth);
    const invited = acme.find((e) => e.action === 'invitation.created')!;
    expect(invited.changes).toEqual({ role: { to: 'member' } });
    expect(invited.hash).toMatch(/^[0-9a-f]{64}$/);
    expect(JSON.stringify(acme)).not.toContain(subject.email);
    expect(acme.filter((e) => e.actor.userId === subject.userId).every((e) => e.ip === null)).toBe(true);

    // every chain verifies after the erasure (plinth audit verify)
    const reports = await t.modules.audit.verify();
    expect(reports.filter((r) => !r.ok)).toEqual([]);
    expect(reports.find((r) => r.orgId === owner.orgId)!.events).toBeGreaterThan(3);

    // the other modules follow through the outbox: the memberships go (audited in each org)
    await t.events.startWorker();
    await waitFor(
      async () => (await t.app.inject({ url: `/v1/orgs/${owner.orgId}/members`, headers: owner.auth })).json().data.map((m: any) => m.userId),
      (ids: string[]) => !ids.includes(subject.userId),
    );
    await t.events.stopWorker();
    expect((await auditOf(owner.orgId, owner.auth)).some((e) => e.action === 'member.removed' && e.changes.reason === 'account_erased')).toBe(true);

    // erased: a second erasure and an export are 404
    expect((await t.app.inject({ method: 'POST', url: `/v1/admin/users/${subject.userId}/erase`, headers: admin })).statusCode).toBe(404);
    const after = await t.app.inject({ method: 'POST', url: `/v1/admin/users/${subject.userId}/data-export`, headers: admin });
    expect(after.statusCode).toBe(201);
    expect(JSON.stringify(JSON.parse((await download(after.json().url)).body))).not.toContain(subject.email);
  });
});
