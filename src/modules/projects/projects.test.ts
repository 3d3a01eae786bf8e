// Over 300 lines on purpose: one HTTP suite over one migrated platform and its signed-up org members (a split would redo both per file).
import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestPlatform, type TestPlatform } from '../../../test/helpers/test-platform.ts';
import { addMember, signup, type SignedUp } from '../../../test/helpers/auth.ts';
import { newId } from '../../platform/ids.ts';
import { createAudit } from '../audit/index.ts';
import { allowEverything, createProjects, PROJECTS_PERMISSIONS, type ProjectsDeps } from './index.ts';

/**
 * Projects through HTTP on the real app: authorization, validation, ETags, pagination, search,
 * numbering and tenant isolation. Runs on PGlite, and on Postgres when TEST_DATABASE_URL is set.
 */
let t: TestPlatform;
let projectLimit = Infinity;
let orgA: string;
let orgB: string;
const users = {} as Record<'adminA' | 'memberA' | 'viewerA' | 'ownerA' | 'adminB', SignedUp & { id: string }>;
type UserName = keyof typeof users;

beforeAll(async () => {
  t = await createTestPlatform({
    seams: {
      entitlements: async () => (current) =>
        current < projectLimit ? { allowed: true } : { allowed: false, reason: `Your plan allows ${projectLimit} projects` },
    },
  });
  // Real signup, invitations and roles: org A has an owner, an admin, a member and a viewer; org B its owner.
  const ownerA = await signup(t.app, { organizationName: 'Org A' });
  const adminB = await signup(t.app, { organizationName: 'Org B' });
  orgA = ownerA.orgId;
  orgB = adminB.orgId;
  Object.assign(users, { ownerA: { ...ownerA, id: ownerA.userId }, adminB: { ...adminB, id: adminB.userId } });
  for (const [name, role] of [['adminA', 'admin'], ['memberA', 'member'], ['viewerA', 'viewer']] as const) {
    const u = await signup(t.app, { organizationName: `${name}'s own org` });
    await addMember(t.app, ownerA, orgA, u, role);
    users[name] = { ...u, id: u.userId };
  }
}, 120_000);
afterAll(async () => t?.close());

/** The module built directly on the test platform (for calls that bypass HTTP validation). */
function directDeps(): ProjectsDeps {
  return { db: t.db, events: t.events, audit: createAudit({ db: t.db }), cache: t.cache, isMember: async () => true, entitlements: allowEverything };
}

function call(as: UserName | null, method: string, url: string, payload?: unknown, headers: Record<string, string> = {}) {
  return t.app.inject({
    method: method as any,
    url,
    payload: payload as any,
    headers: { ...(as ? users[as].auth : {}), ...headers },
  });
}

async function createProject(as: UserName, org: string, body: Record<string, unknown>) {
  const res = await call(as, 'POST', `/v1/orgs/${org}/projects`, body);
  expect(res.statusCode, res.body).toBe(201);
  return res.json();
}

async function createTask(as: UserName, org: string, projectId: string, body: Record<string, unknown>) {
  const res = await call(as, 'POST', `/v1/orgs/${org}/projects/${projectId}/tasks`, body);
  expect(res.statusCode, res.body).toBe(201);
  return res.json();
}

describe(`projects over HTTP (${process.env.TEST_DATABASE_URL ? 'postgres' : 'pglite'})`, () => {
  it('an admin creates a project: 201 with ETag and Location; keys are unique per org', async () => {
    const res = await call('adminA', 'POST', `/v1/orgs/${orgA}/projects`, { key: 'CORE', name: 'Core', description: 'The core' });
    expect(res.statusCode).toBe(201);
    const p = res.json();
    expect(p).toMatchObject({ key: 'CORE', name: 'Core', description: 'The core', archived: false, version: 1, createdBy: users.adminA.id });
    expect(res.headers.etag).toBe('"v1"');
    expect(res.headers.location).toBe(`/v1/orgs/${orgA}/projects/${p.id}`);
    const dup = await call('adminA', 'POST', `/v1/orgs/${orgA}/projects`, { key: 'CORE', name: 'Again' });
    expect(dup.statusCode).toBe(409);
    expect(dup.headers['content-type']).toMatch(/application\/problem\+json/);
    expect(dup.json().code).toBe('PROJECTS.KEY_TAKEN');
    // the same key in another org is fine: uniqueness is tenant-scoped
    await createProject('adminB', orgB, { key: 'CORE', name: 'B core' });
  });

  it('rejects bad project input with 400 problem+json', async () => {
    for (const body of [
      { key: 'core', name: 'lower-case key' },
      { key: 'C', name: 'too short key' },
      { key: 'OK', name: '' },
      { key: 'OK', name: '  ' },
      { key: 'OK', name: 'x'.repeat(101) },
      { key: 'OK', name: 'mass assignment', tenantId: orgB },
      { key: 'OK', name: 'n', archived: true },
    ]) {
      const res = await call('adminA', 'POST', `/v1/orgs/${orgA}/projects`, body);
      expect(res.statusCode, JSON.stringify(body)).toBe(400);
      expect(res.json().code).toBe('HTTP.VALIDATION_FAILED');
    }
  });

  it('permissions: viewers read, members write tasks and comments, only admins manage projects', async () => {
    const p = await createProject('adminA', orgA, { key: 'PERM', name: 'Permissions' });
    expect((await call(null, 'GET', `/v1/orgs/${orgA}/projects`)).statusCode).toBe(401);
    expect((await call('viewerA', 'GET', `/v1/orgs/${orgA}/projects/${p.id}`)).statusCode).toBe(200);
    const forbidden = await call('viewerA', 'POST', `/v1/orgs/${orgA}/projects/${p.id}/tasks`, { title: 'nope' });
    expect(forbidden.statusCode).toBe(403);
    expect(forbidden.json()).toMatchObject({ code: 'AUTH.FORBIDDEN', permission: PROJECTS_PERMISSIONS.tasksWrite });
    expect((await call('memberA', 'POST', `/v1/orgs/${orgA}/projects`, { key: 'MEM', name: 'member' })).statusCode).toBe(403);
    expect((await call('memberA', 'PATCH', `/v1/orgs/${orgA}/projects/${p.id}`, { name: 'x' })).statusCode).toBe(403);
    expect((await call('memberA', 'DELETE', `/v1/orgs/${orgA}/projects/${p.id}`)).statusCode).toBe(403);
    const task = await createTask('memberA', orgA, p.id, { title: 'member task' });
    expect((await call('viewerA', 'PATCH', `/v1/orgs/${orgA}/tasks/${task.id}`, { title: 'x' })).statusCode).toBe(403);
    expect((await call('viewerA', 'DELETE', `/v1/orgs/${orgA}/tasks/${task.id}`)).statusCode).toBe(403);
    expect((await call('viewerA', 'POST', `/v1/orgs/${orgA}/tasks/${task.id}/comments`, { body: 'x' })).statusCode).toBe(403);
    expect((await call('memberA', 'POST', `/v1/orgs/${orgA}/tasks/${task.id}/comments`, { body: 'ok' })).statusCode).toBe(201);
    expect((await call('viewerA', 'GET', `/v1/orgs/${orgA}/tasks/${task.id}/comments`)).json().data).toHaveLength(1);
    // the task was unchanged by the refused writes
    expect((await call('viewerA', 'GET', `/v1/orgs/${orgA}/tasks/${task.id}`)).json()).toMatchObject({ title: 'member task', version: 1 });
  });

  it('creates tasks with KEY-n numbers, validated fields and an assignee who must be a member', async () => {
    const p = await createProject('adminA', orgA, { key: 'TSK', name: 'Tasks' });
    const t1 = await createTask('memberA', orgA, p.id, {
      title: 'First',
      description: 'details',
      status: 'in_progress',
      priority: 'high',
      assigneeId: users.memberA.id,
      labels: ['Bug', 'bug', ' backend '],
      dueDate: '2030-01-31',
    });
    expect(t1).toMatchObject({
      projectId: p.id,
      number: 1,
      key: 'TSK-1',
      status: 'in_progress',
      priority: 'high',
      assigneeId: users.memberA.id,
      labels: ['bug', 'backend'],
      dueDate: '2030-01-31',
      createdBy: users.memberA.id,
      version: 1,
    });
    const t2 = await createTask('memberA', orgA, p.id, { title: 'Second' });
    expect(t2).toMatchObject({ number: 2, key: 'TSK-2', status: 'todo', priority: 'none', assigneeId: null, labels: [], dueDate: null });

    const bad = [
      { title: 'x', status: 'blocked' },
      { title: 'x'.repeat(201) },
      { title: '' },
      { title: 'x', priority: 'p0' },
      { title: 'x', dueDate: '31/01/2030' },
      { title: 'x', dueDate: '2030-02-30' },
      { title: '   ' },
      { title: 'x', labels: Array.from({ length: 21 }, (_, i) => `l${i}`) },
      { title: 'x', assigneeId: 'not-a-uuid' },
      { title: 'x', number: 99 },
    ];
    for (const body of bad) {
      const res = await call('memberA', 'POST', `/v1/orgs/${orgA}/projects/${p.id}/tasks`, body);
      expect(res.statusCode, JSON.stringify(body)).toBe(400);
      expect(res.json().code).toBe('HTTP.VALIDATION_FAILED');
    }
    const outsider = await call('memberA', 'POST', `/v1/orgs/${orgA}/projects/${p.id}/tasks`, { title: 'x', assigneeId: users.adminB.id });
    expect(outsider.statusCode).toBe(422);
    expect(outsider.json().code).toBe('PROJECTS.ASSIGNEE_NOT_MEMBER');
    const patchOutsider = await call('memberA', 'PATCH', `/v1/orgs/${orgA}/tasks/${t2.id}`, { assigneeId: users.adminB.id });
    expect(patchOutsider.statusCode).toBe(422);
    // refused creates consumed no number
    expect((await createTask('memberA', orgA, p.id, { title: 'Third' })).key).toBe('TSK-3');
    const missing = await call('memberA', 'POST', `/v1/orgs/${orgA}/projects/${newId()}/tasks`, { title: 'x' });
    expect(missing.statusCode).toBe(404);
    expect(missing.json().code).toBe('PROJECTS.PROJECT_NOT_FOUND');
  });

  it('numbers concurrent creates 1..N with no gaps or duplicates', async () => {
    const p = await createProject('adminA', orgA, { key: 'RACE', name: 'Race' });
    const n = 40;
    const results = await Promise.all(
      Array.from({ length: n }, (_, i) => call('memberA', 'POST', `/v1/orgs/${orgA}/projects/${p.id}/tasks`, { title: `t${i}` })),
    );
    expect(results.map((r) => r.statusCode)).toEqual(Array(n).fill(201));
    const numbers = results.map((r) => r.json().number).sort((a, b) => a - b);
    expect(numbers).toEqual(Array.from({ length: n }, (_, i) => i + 1));
  });

  it('a create that fails after taking a number gives it back: the sequence stays gap-free', async () => {
    const p = await createProject('adminA', orgA, { key: 'GAP', name: 'Gap-free' });
    await createTask('memberA', orgA, p.id, { title: 'one' });
    const ctx = { tenantId: orgA, actor: { type: 'user' as const, id: users.memberA.id, userId: users.memberA.id }, requestId: 'test', ip: null };
    const service = createProjects(directDeps());
    // bypasses HTTP validation: the database CHECK rejects the row after the counter was incremented
    await expect(service.createTask(ctx, p.id, { title: 'x'.repeat(300) })).rejects.toThrow();
    const next = await createTask('memberA', orgA, p.id, { title: 'two' });
    expect(next.key).toBe('GAP-2');
  });

  it('ETag on reads, 304 on If-None-Match, 412 on a stale If-Match for PATCH and DELETE', async () => {
    const p = await createProject('adminA', orgA, { key: 'ETAG', name: 'ETags' });
    const task = await createTask('memberA', orgA, p.id, { title: 'Versioned' });
    const url = `/v1/orgs/${orgA}/tasks/${task.id}`;
    const read = await call('viewerA', 'GET', url);
    expect(read.headers.etag).toBe('"v1"');
    expect((await call('viewerA', 'GET', url, undefined, { 'if-none-match': '"v1"' })).statusCode).toBe(304);

    // an empty or same-value PATCH changes nothing (no new version, no event)
    expect((await call('memberA', 'PATCH', url, {})).json().version).toBe(1);
    expect((await call('memberA', 'PATCH', url, { title: 'Versioned' })).json().version).toBe(1);
    const ok = await call('memberA', 'PATCH', url, { title: 'Renamed', status: 'done' }, { 'if-match': '"v1"' });
    expect(ok.statusCode).toBe(200);
    expect(ok.headers.etag).toBe('"v2"');
    expect(ok.json()).toMatchObject({ title: 'Renamed', status: 'done', version: 2 });

    const stale = await call('memberA', 'PATCH', url, { title: 'Lost update' }, { 'if-match': '"v1"' });
    expect(stale.statusCode).toBe(412);
    expect(stale.headers['content-type']).toMatch(/application\/problem\+json/);
    expect(stale.json().code).toBe('HTTP.PRECONDITION_FAILED');
    expect(stale.headers.etag).toBe('"v2"');
    expect((await call('memberA', 'DELETE', url, undefined, { 'if-match': '"v1"' })).statusCode).toBe(412);
    const after = await call('viewerA', 'GET', url);
    expect(after.json()).toMatchObject({ title: 'Renamed', version: 2 });
    // the next read shows the change at once (and a stale conditional GET is a full 200)
    expect((await call('viewerA', 'GET', url, undefined, { 'if-none-match': '"v1"' })).statusCode).toBe(200);

    const projectUrl = `/v1/orgs/${orgA}/projects/${p.id}`;
    expect((await call('adminA', 'PATCH', projectUrl, { archived: true }, { 'if-match': '"v9"' })).statusCode).toBe(412);
    const archived = await call('adminA', 'PATCH', projectUrl, { archived: true }, { 'if-match': '"v1"' });
    expect(archived.json()).toMatchObject({ archived: true, version: 2 });
    const refused = await call('memberA', 'POST', `${projectUrl}/tasks`, { title: 'into archive' });
    expect(refused.statusCode).toBe(409);
    expect(refused.json().code).toBe('PROJECTS.PROJECT_ARCHIVED');
    expect((await call('adminA', 'DELETE', projectUrl, undefined, { 'if-match': '"v1"' })).statusCode).toBe(412);
    expect((await call('adminA', 'DELETE', projectUrl, undefined, { 'if-match': '"v2"' })).statusCode).toBe(204);
    expect((await call('viewerA', 'GET', projectUrl)).statusCode).toBe(404);
    expect((await call('viewerA', 'GET', url)).statusCode).toBe(404);
  });

  it('serves task and project by id from the cache, and a change through the API is visible on the next read', async () => {
    const p = await createProject('adminA', orgA, { key: 'CACHE', name: 'Cached' });
    const task = await createTask('memberA', orgA, p.id, { title: 'Cached title' });
    const taskUrl = `/v1/orgs/${orgA}/tasks/${task.id}`;
    const projectUrl = `/v1/orgs/${orgA}/projects/${p.id}`;
    expect((await call('viewerA', 'GET', taskUrl)).json().title).toBe('Cached title');
    expect((await call('viewerA', 'GET', projectUrl)).json().name).toBe('Cached');
    // A write behind the module's back (as the owner) is not seen: the reads are served from the cache.
    await t.db.owner.transaction().execute(async (trx) => {
      await sql`select set_config('app.tenant_id', ${orgA}, true)`.execute(trx);
      await trx.updateTable('tasks').set({ title: 'Changed behind the cache' }).where('id', '=', task.id).execute();
      await trx.updateTable('projects').set({ name: 'Changed behind the cache' }).where('id', '=', p.id).execute();
    });
    expect((await call('viewerA', 'GET', taskUrl)).json().title).toBe('Cached title');
    expect((await call('viewerA', 'GET', projectUrl)).json().name).toBe('Cached');
    // A change through the API invalidates: the very next read shows it.
    const patched = await call('memberA', 'PATCH', taskUrl, { status: 'in_progress' });
    expect(patched.statusCode).toBe(200);
    expect((await call('viewerA', 'GET', taskUrl)).json()).toMatchObject({ status: 'in_progress', title: 'Changed behind the cache', version: 2 });
    expect((await call('adminA', 'PATCH', projectUrl, { description: 'now' })).statusCode).toBe(200);
    expect((await call('viewerA', 'GET', projectUrl)).json()).toMatchObject({ description: 'now', version: 2 });
    // Deleting the project makes its (cached) tasks 404 at once, and deleting a task too.
    const other = await createTask('memberA', orgA, p.id, { title: 'Second' });
    expect((await call('viewerA', 'GET', `/v1/orgs/${orgA}/tasks/${other.id}`)).statusCode).toBe(200);
    expect((await call('memberA', 'DELETE', taskUrl)).statusCode).toBe(204);
    expect((await call('viewerA', 'GET', taskUrl)).statusCode).toBe(404);
    expect((await call('adminA', 'DELETE', projectUrl)).statusCode).toBe(204);
    expect((await call('viewerA', 'GET', projectUrl)).statusCode).toBe(404);
    expect((await call('viewerA', 'GET', `/v1/orgs/${orgA}/tasks/${other.id}`)).statusCode).toBe(404);
  });

  it('lists tasks with keyset pagination, whitelisted filters and sorts, and full-text search', async () => {
    const p = await createProject('adminA', orgA, { key: 'LIST', name: 'Lists' });
    const specs = [
      { title: 'Fix login timeout', status: 'todo', labels: ['bug'], dueDate: '2030-01-10', priority: 'urgent', assigneeId: users.memberA.id },
      { title: 'Add billing export', status: 'in_progress', labels: ['feature'], dueDate: '2030-02-10', priority: 'low' },
      { title: 'Document webhooks', status: 'done', description: 'Explain retries for the billing webhook', priority: 'medium' },
      { title: 'Speed up search', status: 'todo', labels: ['performance', 'bug'], dueDate: '2030-03-10', assigneeId: users.adminA.id },
      { title: 'Cancelled idea', status: 'canceled' },
    ];
    const created = [];
    for (const s of specs) created.push(await createTask('memberA', orgA, p.id, s));
    const base = `/v1/orgs/${orgA}/projects/${p.id}/tasks`;
    const keys = async (query: string) => {
      const res = await call('viewerA', 'GET', `${base}?${query}`);
      expect(res.statusCode, res.body).toBe(200);
      return res.json().data.map((x: any) => x.key);
    };

    // pages of 2 walk all 5 exactly once, newest first by default
    const seen: string[] = [];
    let cursor: string | null = null;
    let pages = 0;
    do {
      const res = await call('viewerA', 'GET', `${base}?limit=2${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`);
      const body = res.json();
      seen.push(...body.data.map((x: any) => x.key));
      cursor = body.nextCursor;
      pages++;
    } while (cursor);
    expect(seen).toEqual(['LIST-5', 'LIST-4', 'LIST-3', 'LIST-2', 'LIST-1']);
    expect(pages).toBe(3);

    expect(await keys('sort=number')).toEqual(['LIST-1', 'LIST-2', 'LIST-3', 'LIST-4', 'LIST-5']);
    expect(await keys('status=todo')).toEqual(['LIST-4', 'LIST-1']);
    expect(await keys('status=todo&status=done&sort=number')).toEqual(['LIST-1', 'LIST-3', 'LIST-4']);
    expect(await keys(`assignee=${users.memberA.id}`)).toEqual(['LIST-1']);
    expect(await keys('assignee=none&sort=number')).toEqual(['LIST-2', 'LIST-3', 'LIST-5']);
    expect(await keys('label=BUG')).toEqual(['LIST-4', 'LIST-1']);
    expect(await keys('dueBefore=2030-02-15&sort=number')).toEqual(['LIST-1', 'LIST-2']);
    expect(await keys('dueAfter=2030-01-10&sort=number')).toEqual(['LIST-2', 'LIST-4']);
    expect(await keys('q=billing&sort=number')).toEqual(['LIST-2', 'LIST-3']);
    expect(await keys('q=webhook')).toEqual(['LIST-3']);
    expect(await keys('q=nothingmatches')).toEqual([]);
    expect(await keys('sort=-priority')).toEqual(['LIST-1', 'LIST-3', 'LIST-2', 'LIST-5', 'LIST-4']);
    expect(await keys('sort=dueDate')).toEqual(['LIST-1', 'LIST-2', 'LIST-4', 'LIST-3', 'LIST-5']);
    expect(await keys('sort=-dueDate')).toEqual(['LIST-5', 'LIST-3', 'LIST-4', 'LIST-2', 'LIST-1']);

    // every sort pages correctly one row at a time (nullable due dates included)
    for (const sort of ['dueDate', '-dueDate', 'priority', '-priority', 'updatedAt', '-updatedAt', 'number']) {
      const all = await keys(`sort=${sort}`);
      const paged: string[] = [];
      let next: string | null = null;
      do {
        const res = await call('viewerA', 'GET', `${base}?sort=${sort}&limit=1${next ? `&cursor=${next}` : ''}`);
        expect(res.statusCode, res.body).toBe(200);
        paged.push(...res.json().data.map((x: any) => x.key));
        next = res.json().nextCursor;
      } while (next);
      expect(paged, sort).toEqual(all);
    }

    const touched = await call('memberA', 'PATCH', `/v1/orgs/${orgA}/tasks/${created[1].id}`, { priority: 'high' });
    expect(await keys(`updatedSince=${encodeURIComponent(touched.json().updatedAt)}`)).toEqual(['LIST-2']);
    expect(await keys('sort=-updatedAt&limit=1')).toEqual(['LIST-2']);
  });

  it('answers 400 for limit > 100, a bad or foreign cursor, unknown filters and sorts', async () => {
    const p = await createProject('adminA', orgA, { key: 'BAD', name: 'Bad input' });
    await createTask('memberA', orgA, p.id, { title: 'one' });
    await createTask('memberA', orgA, p.id, { title: 'two' });
    const base = `/v1/orgs/${orgA}/projects/${p.id}/tasks`;
    const first = (await call('viewerA', 'GET', `${base}?limit=1`)).json();
    expect(first.nextCursor).toEqual(expect.any(String));
    const forged = Buffer.from(JSON.stringify({ v: 1, f: 'x', k: ["'; drop table tasks; --", 1] })).toString('base64url');
    const cases: Array<[string, string]> = [
      ['limit=101', 'HTTP.VALIDATION_FAILED'],
      ['limit=0', 'HTTP.VALIDATION_FAILED'],
      ['cursor=not-a-cursor', 'HTTP.BAD_CURSOR'],
      [`cursor=${forged}`, 'HTTP.BAD_CURSOR'],
      [`sort=number&cursor=${first.nextCursor}`, 'HTTP.BAD_CURSOR'],
      [`status=todo&cursor=${first.nextCursor}`, 'HTTP.BAD_CURSOR'],
      ['owner=me', 'HTTP.VALIDATION_FAILED'],
      ['sort=title', 'HTTP.VALIDATION_FAILED'],
      ['status=blocked', 'HTTP.VALIDATION_FAILED'],
      ['dueBefore=tomorrow', 'HTTP.VALIDATION_FAILED'],
      ['updatedSince=yesterday', 'HTTP.VALIDATION_FAILED'],
      ['assignee=someone', 'HTTP.VALIDATION_FAILED'],
      [`q=${'x'.repeat(201)}`, 'HTTP.VALIDATION_FAILED'],
    ];
    for (const [query, code] of cases) {
      const res = await call('viewerA', 'GET', `${base}?${query}`);
      expect(res.statusCode, query).toBe(400);
      expect(res.json().code, query).toBe(code);
    }
    // a forged cursor with a plausible fingerprint but a non-date value is still a 400, not a SQL error
    const other = (await call('viewerA', 'GET', `${base}?sort=dueDate&limit=1`)).json().nextCursor;
    const body = JSON.parse(Buffer.from(other, 'base64url').toString());
    body.k = ['not-a-date', 1];
    const tampered = await call('viewerA', 'GET', `${base}?sort=dueDate&cursor=${Buffer.from(JSON.stringify(body)).toString('base64url')}`);
    expect(tampered.statusCode).toBe(400);
    // dates JS accepts but Postgres refuses (year 0, impossible day, leap second): 400, not a database error
    for (const [sort, v] of [['dueDate', '0000-01-01'], ['dueDate', '2023-02-29'], ['updatedAt', '2016-12-31T23:59:60Z'], ['updatedAt', '0000-01-01T00:00:00Z']]) {
      const start = JSON.parse(Buffer.from((await call('viewerA', 'GET', `${base}?sort=${sort}&limit=1`)).json().nextCursor, 'base64url').toString());
      start.k = [v, 1];
      const res = await call('viewerA', 'GET', `${base}?sort=${sort}&cursor=${Buffer.from(JSON.stringify(start)).toString('base64url')}`);
      expect(res.statusCode, `${sort} ${v}`).toBe(400);
    }
    expect((await call('viewerA', 'GET', `/v1/orgs/${orgA}/projects?limit=101`)).statusCode).toBe(400);
    expect((await call('viewerA', 'GET', `/v1/orgs/${orgA}/projects?cursor=abc`)).statusCode).toBe(400);
  });

  it('lists projects with pagination and the archived filter', async () => {
    const res = await call('viewerA', 'GET', `/v1/orgs/${orgA}/projects?sort=name&limit=100`);
    const names = res.json().data.map((p: any) => p.name);
    expect(names).toEqual([...names].sort());
    const all: string[] = [];
    let cursor: string | null = null;
    do {
      const page: any = (await call('viewerA', 'GET', `/v1/orgs/${orgA}/projects?limit=2${cursor ? `&cursor=${cursor}` : ''}`)).json();
      all.push(...page.data.map((p: any) => p.id));
      cursor = page.nextCursor;
    } while (cursor);
    expect(new Set(all).size).toBe(all.length);
    expect(all.length).toBe(names.length);
    // project B's rows never show up in A's list
    const bList = (await call('adminB', 'GET', `/v1/orgs/${orgB}/projects`)).json().data;
    expect(bList.every((p: any) => !all.includes(p.id))).toBe(true);
    const notArchived = (await call('viewerA', 'GET', `/v1/orgs/${orgA}/projects?archived=false&limit=100`)).json().data;
    expect(notArchived.every((p: any) => p.archived === false)).toBe(true);
  });

  it("org A's token on org B's projects, tasks and comments: 404, and B is unchanged", async () => {
    const bp = await createProject('adminB', orgB, { key: 'SECRET', name: 'B only' });
    const bt = await createTask('adminB', orgB, bp.id, { title: 'B task' });
    const bc = await call('adminB', 'POST', `/v1/orgs/${orgB}/tasks/${bt.id}/comments`, { body: 'B comment' });
    expect(bc.statusCode).toBe(201);

    // through A's own org path with B's ids
    const viaA: Array<[string, string, unknown?]> = [
      ['GET', `/v1/orgs/${orgA}/projects/${bp.id}`],
      ['PATCH', `/v1/orgs/${orgA}/projects/${bp.id}`, { name: 'hijack' }],
      ['DELETE', `/v1/orgs/${orgA}/projects/${bp.id}`],
      ['GET', `/v1/orgs/${orgA}/projects/${bp.id}/tasks`],
      ['POST', `/v1/orgs/${orgA}/projects/${bp.id}/tasks`, { title: 'inject' }],
      ['GET', `/v1/orgs/${orgA}/tasks/${bt.id}`],
      ['PATCH', `/v1/orgs/${orgA}/tasks/${bt.id}`, { title: 'hijack' }],
      ['DELETE', `/v1/orgs/${orgA}/tasks/${bt.id}`],
      ['GET', `/v1/orgs/${orgA}/tasks/${bt.id}/comments`],
      ['POST', `/v1/orgs/${orgA}/tasks/${bt.id}/comments`, { body: 'inject' }],
    ];
    for (const [method, url, body] of viaA) {
      const res = await call('adminA', method, url, body);
      expect(res.statusCode, `${method} ${url}`).toBe(404);
    }
    // through B's org path: A is not a member there
    for (const [method, url, body] of viaA.map(([m, u, b]) => [m, u.replace(orgA, orgB), b] as [string, string, unknown])) {
      const res = await call('adminA', method, url, body);
      expect(res.statusCode, `${method} ${url}`).toBe(404);
      expect(res.json().code).toBe('ORG.NOT_FOUND');
    }
    // B unchanged
    expect((await call('adminB', 'GET', `/v1/orgs/${orgB}/projects/${bp.id}`)).json()).toMatchObject({ name: 'B only', version: 1 });
    expect((await call('adminB', 'GET', `/v1/orgs/${orgB}/tasks/${bt.id}`)).json()).toMatchObject({ title: 'B task', version: 1 });
    const comments = (await call('adminB', 'GET', `/v1/orgs/${orgB}/tasks/${bt.id}/comments`)).json().data;
    expect(comments.map((c: any) => c.body)).toEqual(['B comment']);
    const tasks = (await call('adminB', 'GET', `/v1/orgs/${orgB}/projects/${bp.id}/tasks`)).json().data;
    expect(tasks.map((x: any) => x.key)).toEqual(['SECRET-1']);
  });

  it('comments: add, list oldest first with pagination, validation', async () => {
    const p = await createProject('adminA', orgA, { key: 'CMT', name: 'Comments' });
    const task = await createTask('memberA', orgA, p.id, { title: 'Discuss' });
    const url = `/v1/orgs/${orgA}/tasks/${task.id}/comments`;
    for (const body of ['one', 'two', 'three']) {
      const res = await call('memberA', 'POST', url, { body });
      expect(res.statusCode).toBe(201);
      expect(res.json()).toMatchObject({ taskId: task.id, authorId: users.memberA.id, body });
    }
    const first = (await call('viewerA', 'GET', `${url}?limit=2`)).json();
    expect(first.data.map((c: any) => c.body)).toEqual(['one', 'two']);
    const second = (await call('viewerA', 'GET', `${url}?limit=2&cursor=${first.nextCursor}`)).json();
    expect(second).toMatchObject({ data: [{ body: 'three' }], nextCursor: null });
    expect((await call('memberA', 'POST', url, { body: '' })).statusCode).toBe(400);
    expect((await call('memberA', 'POST', url, { body: 'x'.repeat(10001) })).statusCode).toBe(400);
    expect((await call('memberA', 'POST', url, { body: 'x', authorId: users.adminA.id })).statusCode).toBe(400);
    expect((await call('memberA', 'POST', `/v1/orgs/${orgA}/tasks/${newId()}/comments`, { body: 'x' })).statusCode).toBe(404);
  });

  it('records an audit event for every mutation, in the same transaction (nothing for refused ones)', async () => {
    const p = await createProject('adminA', orgA, { key: 'AUD', name: 'Audited' });
    const task = await createTask('memberA', orgA, p.id, { title: 'Audit me', assigneeId: users.viewerA.id });
    const url = `/v1/orgs/${orgA}/tasks/${task.id}`;
    expect((await call('memberA', 'PATCH', url, { status: 'done', title: 'Audited' })).statusCode).toBe(200);
    expect((await call('memberA', 'PATCH', url, { status: 'todo' }, { 'if-match': '"v1"' })).statusCode).toBe(412);
    const comment = (await call('memberA', 'POST', `${url}/comments`, { body: 'noted' })).json();
    expect((await call('memberA', 'DELETE', url)).statusCode).toBe(204);
    expect((await call('adminA', 'PATCH', `/v1/orgs/${orgA}/projects/${p.id}`, { name: 'Renamed' })).statusCode).toBe(200);
    expect((await call('adminA', 'DELETE', `/v1/orgs/${orgA}/projects/${p.id}`)).statusCode).toBe(204);

    const events = async (query: string) => {
      const res = await call('ownerA', 'GET', `/v1/orgs/${orgA}/audit-events?${query}&limit=100`);
      expect(res.statusCode, res.body).toBe(200);
      return res.json().data as any[];
    };
    const forTask = await events(`targetId=${task.id}`);
    expect(forTask.map((e) => e.action).sort()).toEqual(['projects.task.create', 'projects.task.delete', 'projects.task.update']);
    const update = forTask.find((e) => e.action === 'projects.task.update');
    expect(update.changes).toEqual({ status: { from: 'todo', to: 'done' }, title: { from: 'Audit me', to: 'Audited' } });
    expect(update.actor).toMatchObject({ type: 'user', id: users.memberA.id });
    const forProject = await events(`targetId=${p.id}`);
    expect(forProject.map((e) => e.action).sort()).toEqual(['projects.project.create', 'projects.project.delete', 'projects.project.update']);
    expect((await events(`targetId=${comment.id}`)).map((e) => e.action)).toEqual(['projects.comment.create']);
  });

  it('documents every route in the OpenAPI spec with its schemas', async () => {
    const spec = (await t.app.inject({ url: '/openapi.json' })).json();
    const tasks = spec.paths['/v1/orgs/{orgId}/projects/{projectId}/tasks'];
    expect(Object.keys(tasks).sort()).toEqual(['get', 'post']);
    expect(tasks.get.parameters.map((p: any) => p.name)).toEqual(
      expect.arrayContaining(['status', 'assignee', 'label', 'dueBefore', 'dueAfter', 'updatedSince', 'q', 'sort', 'limit', 'cursor']),
    );
    for (const path of ['/v1/orgs/{orgId}/projects', '/v1/orgs/{orgId}/projects/{projectId}', '/v1/orgs/{orgId}/tasks/{taskId}', '/v1/orgs/{orgId}/tasks/{taskId}/comments']) {
      expect(spec.paths[path], path).toBeDefined();
    }
    expect(spec.paths['/v1/orgs/{orgId}/tasks/{taskId}'].patch.requestBody.content['application/json'].schema.properties.status.enum).toEqual([
      'todo',
      'in_progress',
      'done',
      'canceled',
    ]);
  });

  it('publishes its events through the outbox, in the transaction of the change (none for refused changes)', async () => {
    const since = newId();
    const p = await createProject('adminA', orgA, { key: 'EVT', name: 'Events' });
    const task = await createTask('memberA', orgA, p.id, { title: 'Evented', assigneeId: users.memberA.id });
    const url = `/v1/orgs/${orgA}/tasks/${task.id}`;
    expect((await call('memberA', 'PATCH', url, { status: 'done', priority: 'low' })).statusCode).toBe(200);
    expect((await call('memberA', 'PATCH', url, { assigneeId: users.viewerA.id })).statusCode).toBe(200);
    expect((await call('memberA', 'PATCH', url, { title: 'stale' }, { 'if-match': '"v1"' })).statusCode).toBe(412);
    expect((await call('memberA', 'PATCH', url, { assigneeId: users.adminB.id })).statusCode).toBe(422);
    expect((await call('memberA', 'PATCH', url, {})).statusCode).toBe(200);
    const comment = (await call('memberA', 'POST', `${url}/comments`, { body: 'hi' })).json();
    expect((await call('adminA', 'POST', `/v1/orgs/${orgA}/projects`, { key: 'EVT', name: 'duplicate' })).statusCode).toBe(409);

    const rows = await t.db.owner
      .selectFrom('outbox')
      .select(['name', 'tenant_id', 'payload', 'request_id'])
      .where('tenant_id', '=', orgA)
      .where('id', '>', since)
      .orderBy('id')
      .execute();
    expect(rows.map((r) => r.name)).toEqual([
      'projects.project_created',
      'projects.task_created',
      'projects.task_assigned',
      'projects.task_updated',
      'projects.task_updated',
      'projects.task_assigned',
      'projects.comment_added',
    ]);
    expect(rows.every((r) => typeof r.request_id === 'string' && r.request_id.length > 0)).toBe(true);
    const [created, taskCreated, firstAssign, statusUpdate, assigneeUpdate, reassign, commented] = rows.map((r) => r.payload as any);
    expect(created).toEqual({ projectId: p.id, key: 'EVT', name: 'Events', actorId: users.adminA.id });
    expect(taskCreated).toMatchObject({ taskId: task.id, projectId: p.id, number: 1, key: 'EVT-1', assigneeId: users.memberA.id });
    expect(firstAssign).toMatchObject({ taskId: task.id, assigneeId: users.memberA.id, previousAssigneeId: null });
    expect(statusUpdate).toEqual({ taskId: task.id, projectId: p.id, key: 'EVT-1', changes: { status: 'done', priority: 'low' }, actorId: users.memberA.id });
    expect(assigneeUpdate.changes).toEqual({ assigneeId: users.viewerA.id });
    expect(reassign).toMatchObject({ assigneeId: users.viewerA.id, previousAssigneeId: users.memberA.id });
    expect(commented).toEqual({ commentId: comment.id, taskId: task.id, projectId: p.id, authorId: users.memberA.id });

    // Same transaction: when the change fails after its event was written, neither the task nor the event remains.
    const failing = createProjects({
      ...directDeps(),
      events: { add: async (trx, event) => { await t.events.add(trx, event); throw new Error('fails after the outbox write'); } },
    });
    const ctx = { tenantId: orgA, actor: { type: 'user' as const, id: users.memberA.id, userId: users.memberA.id }, requestId: 'rollback-test', ip: null };
    await expect(failing.createTask(ctx, p.id, { title: 'Never' })).rejects.toThrow('fails after the outbox write');
    const leftovers = await t.db.owner.selectFrom('outbox').select('id').where('request_id', '=', 'rollback-test').execute();
    expect(leftovers).toEqual([]);
    const list = (await call('viewerA', 'GET', `/v1/orgs/${orgA}/projects/${p.id}/tasks`)).json().data;
    expect(list.map((x: any) => x.title)).toEqual(['Evented']);
    expect((await createTask('memberA', orgA, p.id, { title: 'Next' })).number).toBe(2);
  });

  it('asks the entitlement function before creating a project and answers 402 when refused', async () => {
    const current = (await call('viewerA', 'GET', `/v1/orgs/${orgA}/projects?limit=100`)).json().data.length;
    projectLimit = current;
    try {
      const res = await call('adminA', 'POST', `/v1/orgs/${orgA}/projects`, { key: 'OVER', name: 'Over the limit' });
      expect(res.statusCode).toBe(402);
      expect(res.headers['content-type']).toMatch(/application\/problem\+json/);
      expect(res.json()).toMatchObject({ code: 'PROJECTS.PLAN_LIMIT_REACHED', detail: `Your plan allows ${current} projects` });
      expect((await call('viewerA', 'GET', `/v1/orgs/${orgA}/projects?limit=100`)).json().data.length).toBe(current);
      // one more allowed: of 5 concurrent creates exactly one gets through (the check and insert are serialized)
      projectLimit = current + 1;
      const racing = await Promise.all(
        ['RACEA', 'RACEB', 'RACEC', 'RACED', 'RACEE'].map((key) => call('adminA', 'POST', `/v1/orgs/${orgA}/projects`, { key, name: key })),
      );
      expect(racing.map((r) => r.statusCode).sort()).toEqual([201, 402, 402, 402, 402]);
    } finally {
      projectLimit = Infinity;
    }
  });
});
