import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestPlatform, type TestPlatform } from '../test/helpers/test-platform.ts';
import { parseSeedArgs, progressBar, runSeed, SEED_PASSWORD } from './seed.ts';

describe(`plinth seed (${process.env.TEST_DATABASE_URL ? 'postgres' : 'pglite'})`, () => {
  let t: TestPlatform;
  beforeAll(async () => {
    t = await createTestPlatform();
  });
  afterAll(async () => t?.close());

  it('parses its arguments and refuses bad ones with the usage line', () => {
    expect(parseSeedArgs(['--orgs', '3', '--tasks', '1000'])).toEqual({ orgs: 3, tasks: 1000, projectsPerOrg: 5, batchSize: 20_000 });
    for (const bad of [['--orgs'], ['--orgs', 'many'], ['--tenants', '3'], ['--orgs', '0'], ['--batch', '5'], ['--tasks', '-1']]) {
      expect(() => parseSeedArgs(bad), bad.join(' ')).toThrow(/usage: plinth seed/);
    }
  });

  it('draws a progress bar', () => {
    expect(progressBar(450, 1000, 1000, 10)).toBe('[####......]  45%  450/1000 tasks  1.0s  450/s');
    expect(progressBar(1000, 1000, 2000, 10)).toMatch(/^\[##########\] 100%/);
  });

  it('creates real orgs whose owners log in and see gap-free tasks that the API continues', async () => {
    const lines: string[] = [];
    const out = { isTTY: false, write: (s: string) => lines.push(s) } as unknown as NodeJS.WriteStream;
    const r = await runSeed(t, t.modules, { orgs: 2, tasks: 1_001, projectsPerOrg: 2, batchSize: 200 }, out);
    expect(r).toMatchObject({ projects: 4, tasks: 1_001 });
    expect(lines.some((l) => l.includes('100%') && l.includes('1001/1001 tasks'))).toBe(true);

    const login = await t.app.inject({ method: 'POST', url: '/v1/auth/login', payload: { email: r.orgs[1]!.email, password: SEED_PASSWORD } });
    expect(login.statusCode, login.body).toBe(200);
    const auth = { authorization: `Bearer ${login.json().token}` };
    const orgId = r.orgs[1]!.id;
    const projects = (await t.app.inject({ url: `/v1/orgs/${orgId}/projects?sort=name`, headers: auth })).json().data;
    expect(projects.map((p: any) => p.key)).toEqual(['P01', 'P02']);
    const page = (await t.app.inject({ url: `/v1/orgs/${orgId}/projects/${projects[0].id}/tasks?limit=100&sort=number`, headers: auth })).json();
    expect(page.data.map((x: any) => x.number)).toEqual(Array.from({ length: 100 }, (_, i) => i + 1));
    expect(page.data[0].key).toBe('P01-1');
    const count = 501; // the last org takes the remainder: 1001 - 500, split 251 + 250
    const created = await t.app.inject({
      method: 'POST',
      url: `/v1/orgs/${orgId}/projects/${projects[0].id}/tasks`,
      headers: auth,
      payload: { title: 'After the seed' },
    });
    expect(created.statusCode, created.body).toBe(201);
    expect(created.json().number).toBe(Math.ceil(count / 2) + 1);
  });
});
