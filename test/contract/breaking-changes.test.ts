import fs from 'node:fs';
import { describe, expect, it } from 'vitest';
import { acceptedFor, breakingChanges, previousRelease, readSnapshot, snapshotFile, sunsetOf } from '../../clients/typescript/contract.ts';

/**
 * The breaking-change classes of `npm run contract:check` (clients/typescript/contract.ts), each on a small
 * fixture document shaped like the one @fastify/swagger generates from TypeBox, plus the additive changes
 * that must pass. No server: these are pure functions of two documents.
 */
const NOW = new Date('2026-06-01T00:00:00Z');
type Spec = Record<string, any>;

function base(): Spec {
  return {
    openapi: '3.1.0',
    info: { title: 'fixture', version: '1' },
    security: [{ bearer: [] }],
    components: {
      schemas: {
        Thing: {
          type: 'object',
          additionalProperties: false,
          required: ['id', 'name', 'status', 'count'],
          properties: {
            id: { type: 'string', format: 'uuid' },
            name: { type: 'string' },
            status: { anyOf: [{ const: 'open', type: 'string' }, { const: 'done', type: 'string' }] },
            count: { type: 'integer' },
            note: { anyOf: [{ type: 'string' }, { type: 'null' }] },
            tags: { type: 'array', items: { type: 'string' } },
          },
        },
      },
    },
    paths: {
      '/v1/things': {
        get: {
          parameters: [{ in: 'query', name: 'limit', required: false, schema: { type: 'integer', minimum: 1, maximum: 100 } }],
          responses: {
            '200': { description: 'ok', content: { 'application/json': { schema: { type: 'object', required: ['data'], properties: { data: { type: 'array', items: { $ref: '#/components/schemas/Thing' } }, nextCursor: { type: 'string' } } } } } },
          },
        },
        post: {
          requestBody: {
            required: true,
            content: {
              'application/json': {
                schema: {
                  type: 'object',
                  additionalProperties: false,
                  required: ['name'],
                  properties: {
                    name: { type: 'string', minLength: 1, maxLength: 100 },
                    kind: { type: 'string', enum: ['a', 'b'] },
                    tags: { type: 'array', maxItems: 10, items: { type: 'string' } },
                  },
                },
              },
            },
          },
          responses: { '201': { description: 'created', content: { 'application/json': { schema: { $ref: '#/components/schemas/Thing' } } } } },
        },
      },
      '/v1/things/{id}': {
        delete: {
          parameters: [{ in: 'path', name: 'id', required: true, schema: { type: 'string', format: 'uuid' } }],
          responses: { '204': { description: 'gone' }, '404': { description: 'not found' } },
        },
      },
      '/v1/public': { get: { security: [], responses: { '200': { description: 'ok', content: { 'application/json': { schema: { type: 'object', properties: { ok: { type: 'boolean' } } } } } } } } },
      '/v1/old': { get: { deprecated: true, 'x-sunset': '2026-03-01', responses: { '200': { description: 'ok' } } } },
      '/v1/older': { get: { deprecated: true, description: '**Deprecated** since 2026-01-01; removed on 2026-12-01. Migration: https://x', responses: { '200': { description: 'ok' } } } },
    },
  };
}

const thing = (s: Spec) => s.components.schemas.Thing;
const postBody = (s: Spec) => s.paths['/v1/things'].post.requestBody.content['application/json'].schema;
const check = (mutate: (s: Spec) => void) => {
  const next = base();
  mutate(next);
  return breakingChanges(base(), next, { now: NOW });
};

describe('contract check: breaking changes are caught', () => {
  it.each<[string, (s: Spec) => void, RegExp]>([
    ['an operation removed', (s) => delete s.paths['/v1/things/{id}'].delete, /^DELETE \/v1\/things\/\{id\}: removed without a deprecation$/],
    ['a response field removed (through a $ref)', (s) => delete thing(s).properties.name, /^GET \/v1\/things: response 200\.data\[\]: property name removed$/],
    ['a response field no longer always present', (s) => (thing(s).required = ['id', 'name', 'status']), /response 200\.data\[\]: property count is no longer always present/],
    ['a response field widened to null', (s) => (thing(s).properties.count = { anyOf: [{ type: 'integer' }, { type: 'null' }] }), /response 200\.data\[\]\.count: type widened: may now be null/],
    ['a response field changed type', (s) => (thing(s).properties.count = { type: 'string' }), /response 201\.count: type widened: may now be string/],
    ['a response enum value added', (s) => thing(s).properties.status.anyOf.push({ const: 'archived', type: 'string' }), /\.status: may now return "archived"/],
    ['a new required body property', (s) => postBody(s).required.push('kind'), /^POST \/v1\/things: body: property kind is now required$/],
    ['a body property removed', (s) => delete postBody(s).properties.tags, /^POST \/v1\/things: body: property tags removed$/],
    ['a body field narrowed: type', (s) => (postBody(s).properties.name = { type: 'integer' }), /body\.name: type narrowed: no longer accepts string/],
    ['a body field narrowed: maxLength', (s) => (postBody(s).properties.name.maxLength = 50), /body\.name: maxLength tightened \(100 → 50\)/],
    ['a body field narrowed: pattern added', (s) => (postBody(s).properties.name.pattern = '^[a-z]+$'), /body\.name: pattern added/],
    ['a body enum value removed', (s) => (postBody(s).properties.kind.enum = ['a']), /body\.kind: no longer accepts "b"/],
    ['an array narrowed: maxItems / items', (s) => Object.assign(postBody(s).properties.tags, { maxItems: 5, items: { type: 'string', format: 'uuid' } }), /body\.tags: maxItems tightened/],
    ['array items narrowed', (s) => (postBody(s).properties.tags.items = { type: 'string', format: 'uuid' }), /body\.tags\[\]: format added \(uuid\)/],
    ['a parameter narrowed: maximum', (s) => (s.paths['/v1/things'].get.parameters[0].schema = { type: 'integer', minimum: 1, maximum: 50 }), /parameter query:limit: maximum tightened \(100 → 50\)/],
    ['a parameter narrowed in type', (s) => (s.paths['/v1/things'].get.parameters[0].schema = { type: 'string', enum: ['10', '20'] }), /parameter query:limit: type narrowed: no longer accepts integer/],
    ['an optional parameter now required', (s) => (s.paths['/v1/things'].get.parameters[0].required = true), /^GET \/v1\/things: parameter query:limit is now required$/],
    ['a new required parameter', (s) => s.paths['/v1/things'].post.parameters = [{ in: 'header', name: 'X-Tenant', required: true, schema: { type: 'string' } }], /^POST \/v1\/things: new required parameter header:x-tenant$/],
    ['a parameter removed', (s) => (s.paths['/v1/things'].get.parameters = []), /^GET \/v1\/things: parameter query:limit removed$/],
    ['a status code changed (201 → 200)', (s) => {
      const op = s.paths['/v1/things'].post;
      op.responses = { '200': op.responses['201'] };
    }, /^POST \/v1\/things: response 201 removed$/],
    ['a new success status added', (s) => (s.paths['/v1/things/{id}'].delete.responses['202'] = { description: 'queued' }), /^DELETE \/v1\/things\/\{id\}: new success status 202 \(was 204\)$/],
    ['a response content type removed', (s) => (s.paths['/v1/things'].get.responses['200'].content = { 'text/csv': { schema: { type: 'string' } } }), /response 200 no longer application\/json/],
    ['a public operation now requires authentication', (s) => delete s.paths['/v1/public'].get.security, /^GET \/v1\/public: now requires authentication$/],
    ['a request body required where there was none', (s) => (s.paths['/v1/things/{id}'].delete.requestBody = { required: true, content: { 'application/json': { schema: { type: 'object' } } } }), /a request body is now required/],
    ['a deprecated operation removed before its sunset', (s) => delete s.paths['/v1/older'].get, /^GET \/v1\/older: removed before its sunset \(2026-12-01\)$/],
  ])('%s', (_name, mutate, expected) => {
    const problems = check(mutate);
    expect(problems, problems.join('\n')).toEqual(expect.arrayContaining([expect.stringMatching(expected)]));
  });

  it('narrowing a body that had open properties to additionalProperties: false is caught', () => {
    const prev = base();
    delete postBody(prev).additionalProperties;
    expect(breakingChanges(prev, base(), { now: NOW })).toContain('POST /v1/things: body: no longer accepts additional properties');
  });
});

describe('contract check: additive changes pass', () => {
  it('an identical document has no breaking change', () => {
    expect(breakingChanges(base(), base(), { now: NOW })).toEqual([]);
  });

  it('new operations, new versions, optional inputs, new outputs, wider inputs and narrower outputs are not breaking', () => {
    const problems = check((s) => {
      s.paths['/v1/things/{id}'].get = { responses: { '200': { description: 'ok' } } };
      s.paths['/v2/things'] = { post: { requestBody: { required: true, content: { 'application/json': { schema: { type: 'object', required: ['title'], properties: { title: { type: 'string' } } } } } }, responses: { '201': { description: 'created' } } } };
      postBody(s).properties.description = { type: 'string', maxLength: 2000 };
      postBody(s).properties.name.maxLength = 200;
      delete postBody(s).properties.name.minLength;
      postBody(s).properties.kind.enum.push('c');
      postBody(s).properties.tags.maxItems = 50;
      s.paths['/v1/things'].get.parameters.push({ in: 'query', name: 'status', required: false, schema: { type: 'string' } });
      s.paths['/v1/things'].get.parameters[0].schema = { type: 'number', minimum: 0 };
      s.paths['/v1/things'].post.responses['409'] = { description: 'conflict' };
      s.paths['/v1/things/{id}'].delete.responses['412'] = { description: 'precondition failed' };
      delete s.paths['/v1/things/{id}'].delete.responses['404'];
      thing(s).properties.createdAt = { type: 'string', format: 'date-time' };
      thing(s).required.push('createdAt');
      thing(s).properties.note = { type: 'string' };
      thing(s).properties.status = { const: 'open', type: 'string' };
      s.paths['/v1/public'].get.deprecated = true;
    });
    expect(problems).toEqual([]);
  });

  it('an operation deprecated with its sunset passed may be removed or changed', () => {
    expect(check((s) => delete s.paths['/v1/old'].get)).toEqual([]);
    expect(breakingChanges(base(), (() => { const s = base(); delete s.paths['/v1/older'].get; return s; })(), { now: new Date('2026-12-02') })).toEqual([]);
    expect(sunsetOf(base().paths['/v1/older'].get)?.toISOString().slice(0, 10)).toBe('2026-12-01');
    expect(sunsetOf({ deprecated: true })).toBeUndefined();
  });
});

describe('contract check: the previous release', () => {
  it("deploy/releases.json's previous release has its snapshot committed, and the committed contract breaks nothing against it but the reviewed exceptions", () => {
    const release = previousRelease();
    const snapshot = readSnapshot(release);
    expect(snapshot, `commit ${snapshotFile(release)} (npm run contract:check -- --snapshot)`).toBeDefined();
    const current = JSON.parse(fs.readFileSync('clients/typescript/openapi.json', 'utf8'));
    const accepted = acceptedFor(release).map((a) => a.change);
    const problems = breakingChanges(snapshot!, current);
    expect(problems.filter((p) => !accepted.includes(p))).toEqual([]);
    // Every reviewed exception still describes a real change (a stale one would hide nothing, but misleads).
    expect(accepted.filter((a) => !problems.includes(a))).toEqual([]);
  });
});
