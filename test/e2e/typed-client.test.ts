import fs from 'node:fs';
import { createServer, type IncomingHttpHeaders, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Ajv2020 } from 'ajv/dist/2020.js';
import addFormats from 'ajv-formats';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createPlinthClient } from '../../clients/typescript/src/index.ts';
import { breakingChanges } from '../../clients/typescript/contract.ts';
import { SCHEMA_FILE, SPEC_FILE, schemaText, specText } from '../../clients/typescript/generate.ts';
import { verifySignature } from '../../src/modules/notifications/index.ts';
import { STRONG_PASSWORD } from '../helpers/auth.ts';
import { waitFor } from '../helpers/jobs.ts';
import { createTestPlatform, type TestPlatform } from '../helpers/test-platform.ts';

/**
 * The generated TypeScript client (clients/typescript) against a real listening server, the way a web or
 * mobile front end uses the API: signup → project → task → webhook delivered. And the contract check:
 * the committed openapi.json and the generated types are exactly what this server generates.
 */
let t: TestPlatform;
let baseUrl: string;
let receiver: Server;
let hookUrl: string;
const received: Array<{ headers: IncomingHttpHeaders; body: string }> = [];

beforeAll(async () => {
  receiver = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => {
      received.push({ headers: req.headers, body: Buffer.concat(chunks).toString('utf8') });
      res.writeHead(204).end();
    });
  });
  await new Promise<void>((resolve) => receiver.listen(0, '127.0.0.1', resolve));
  hookUrl = `http://127.0.0.1:${(receiver.address() as AddressInfo).port}/hook`;
  t = await createTestPlatform({ env: { JOBS_POLL_MS: '20', JOBS_IDLE_POLL_MS: '20' } });
  await t.app.listen({ port: 0, host: '127.0.0.1' });
  baseUrl = `http://127.0.0.1:${(t.app.server.address() as AddressInfo).port}`;
  await t.events.startWorker();
}, 120_000);
afterAll(async () => {
  receiver?.closeAllConnections();
  await new Promise((r) => receiver?.close(r));
  await t?.close();
});

describe('typed client', () => {
  it('signs up, creates a project and a task, registers a webhook and receives the signed event — all through the generated client', async () => {
    const anonymous = createPlinthClient({ baseUrl });
    const email = `client-${Date.now()}@example.com`;
    const signed = await anonymous.POST('/v1/auth/signup', { body: { email, password: STRONG_PASSWORD, name: 'Client User', organizationName: 'Client Org' } });
    expect(signed.response.status, JSON.stringify(signed.error)).toBe(201);
    const orgId = signed.data!.organization.id;
    const plinth = createPlinthClient({ baseUrl, token: signed.data!.token });

    const hook = await plinth.POST('/v1/orgs/{orgId}/webhooks', { params: { path: { orgId } }, body: { url: hookUrl, events: ['projects.task_created'] } });
    expect(hook.response.status, JSON.stringify(hook.error)).toBe(201);

    const project = await plinth.POST('/v1/orgs/{orgId}/projects', { params: { path: { orgId } }, body: { key: 'CLI', name: 'Client project' } });
    expect(project.response.status, JSON.stringify(project.error)).toBe(201);
    const projectId = project.data!.id;
    const task = await plinth.POST('/v1/orgs/{orgId}/projects/{projectId}/tasks', { params: { path: { orgId, projectId } }, body: { title: 'Through the typed client' } });
    expect(task.response.status, JSON.stringify(task.error)).toBe(201);
    expect(task.data!.title).toBe('Through the typed client');

    const listed = await plinth.GET('/v1/orgs/{orgId}/projects/{projectId}/tasks', { params: { path: { orgId, projectId } } });
    expect(listed.data!.data.map((x) => x.id)).toEqual([task.data!.id]);

    // Errors are problem details, typed as the spec's error responses.
    const missing = await plinth.GET('/v1/orgs/{orgId}/projects/{projectId}', { params: { path: { orgId, projectId: '01900000-0000-7000-8000-000000000000' } } });
    expect(missing.response.status).toBe(404);
    expect(missing.error).toMatchObject({ status: 404 });

    await waitFor(async () => received.length, (n) => n >= 1);
    const delivery = received[0]!;
    const body = JSON.parse(delivery.body);
    expect(body).toMatchObject({ type: 'projects.task_created', orgId, data: { taskId: task.data!.id, title: 'Through the typed client' } });
    const ok = verifySignature(
      hook.data!.secret,
      { id: String(delivery.headers['webhook-id']), timestamp: String(delivery.headers['webhook-timestamp']), signature: String(delivery.headers['webhook-signature']) },
      delivery.body,
    );
    expect(ok).toBe(true);
  });
});

describe('contract', () => {
  it('the committed openapi.json and generated types match what the server generates (npm run client:generate)', async () => {
    const res = await t.app.inject({ url: '/openapi.json' });
    expect(res.statusCode).toBe(200);
    const spec = res.json();
    expect(fs.readFileSync(SPEC_FILE, 'utf8'), 'openapi.json is stale: run npm run client:generate').toBe(specText(spec));
    expect(fs.readFileSync(SCHEMA_FILE, 'utf8'), 'schema.d.ts is stale: run npm run client:generate').toBe(await schemaText(spec));
  });

  it('flags breaking changes against a previous version, unless the operation was deprecated', () => {
    const spec = JSON.parse(fs.readFileSync(SPEC_FILE, 'utf8'));
    expect(breakingChanges(spec, spec)).toEqual([]);
    const next = structuredClone(spec);
    delete next.paths['/v1/orgs/{orgId}/projects'].get;
    next.paths['/v1/orgs/{orgId}/projects'].post.requestBody.content['application/json'].schema.required.push('description');
    const taskGet = next.paths['/v1/orgs/{orgId}/projects/{projectId}/tasks/{taskId}'] ?? next.paths['/v1/orgs/{orgId}/tasks/{taskId}'];
    const schema = taskGet.get.responses['200'].content['application/json'].schema;
    delete (schema.$ref ? next.components.schemas[schema.$ref.split('/').pop()] : schema).properties.title;
    const problems = breakingChanges(spec, next);
    expect(problems).toEqual(
      expect.arrayContaining([
        'GET /v1/orgs/{orgId}/projects: removed without a deprecation',
        'POST /v1/orgs/{orgId}/projects: body: property description is now required',
        expect.stringMatching(/^GET \/v1\/orgs\/\{orgId\}\/(projects\/\{projectId\}\/)?tasks\/\{taskId\}: response 200: property title removed$/),
      ]),
    );
    // Deprecated first: removing it is allowed once its sunset has passed (test/contract has every class).
    const deprecated = structuredClone(spec);
    Object.assign(deprecated.paths['/v1/orgs/{orgId}/projects'].get, { deprecated: true, 'x-sunset': '2027-06-01' });
    const removed = structuredClone(deprecated);
    delete removed.paths['/v1/orgs/{orgId}/projects'].get;
    expect(breakingChanges(deprecated, removed, { now: new Date('2027-05-31') })).toEqual(['GET /v1/orgs/{orgId}/projects: removed before its sunset (2027-06-01)']);
    expect(breakingChanges(deprecated, removed, { now: new Date('2027-06-01') })).toEqual([]);
  });

  it("every example in the spec (schema examples, request and response examples) is valid against its own schema", () => {
    const spec = JSON.parse(fs.readFileSync(SPEC_FILE, 'utf8'));
    const ajv = new Ajv2020({ strict: false, allErrors: true });
    (addFormats as unknown as (a: Ajv2020) => void)(ajv);
    ajv.addSchema(spec, 'spec');
    const checks: Array<{ at: string; schemaAt: string; value: unknown }> = [];
    const esc = (k: string) => k.replace(/~/g, '~0').replace(/\//g, '~1');
    const walk = (node: unknown, at: string) => {
      if (!node || typeof node !== 'object') return;
      const n = node as Record<string, any>;
      // A media type object: its `example` / `examples.{name}.value` against its `schema`.
      if (n.schema && typeof n.schema === 'object' && (n.example !== undefined || n.examples)) {
        if (n.example !== undefined) checks.push({ at: `${at}/example`, schemaAt: `${at}/schema`, value: n.example });
        for (const [name, ex] of Object.entries<any>(n.examples ?? {})) if (ex?.value !== undefined) checks.push({ at: `${at}/examples/${name}`, schemaAt: `${at}/schema`, value: ex.value });
      } else if (Array.isArray(n.examples) && (n.type || n.anyOf || n.oneOf || n.$ref || n.properties)) {
        n.examples.forEach((value: unknown, i: number) => checks.push({ at: `${at}/examples/${i}`, schemaAt: at, value }));
      }
      for (const [k, v] of Object.entries(n)) if (k !== 'examples' && k !== 'example') walk(v, `${at}/${esc(k)}`);
    };
    walk(spec.paths, '#/paths');
    walk(spec.components, '#/components');
    expect(checks.length).toBeGreaterThan(0);
    // The check can fail: a value of the wrong shape is refused at the same schema.
    expect(ajv.validate({ $ref: `spec${checks[0]!.schemaAt}` }, { not: 'an example' })).toBe(false);
    const invalid = checks.filter((c) => !ajv.validate({ $ref: `spec${c.schemaAt}` }, c.value)).map((c) => `${c.at}: ${ajv.errorsText()}`);
    expect(invalid).toEqual([]);
  });
});
