import { Type } from '@sinclair/typebox';
import { sql, type Kysely } from 'kysely';
import type { ModuleRoutes } from '../../src/platform/http/module-routes.ts';
import type { Modules, Platform } from '../../src/main.ts';
import type { Database } from '../../src/platform/db/database.ts';
import { createApiApp } from '../../src/main.ts';
import { accessOf, type Authenticator } from '../../src/platform/http/auth.ts';
import { AppError } from '../../src/platform/http/errors.ts';
import { DEFAULT_PAGE_SIZE, pageQuery } from '../../src/platform/http/pagination.ts';
import type { App } from '../../src/platform/http/server.ts';
import { newId } from '../../src/platform/ids.ts';
import { protectTenantTable } from '../../src/platform/migrate/helpers.ts';
import { testTables } from '../../src/platform/testing/test-db.ts';

/**
 * Test-only stand-ins until identity and projects land: a bearer token is the user id ("Bearer alice"),
 * every user is a member of every org with widgets:read/write, except "reader" (read only).
 */
export const testAuthenticator: Authenticator = {
  async authenticate(request) {
    const token = request.headers.authorization?.replace(/^Bearer /, '');
    if (!token || !/^[a-z0-9-]{1,40}$/.test(token)) return null;
    return { kind: 'user', userId: token, sessionId: `s-${token}`, isPlatformAdmin: false };
  },
  async resolveAccess(principal, orgId) {
    const permissions = principal.userId === 'reader' ? ['widgets:read'] : ['widgets:read', 'widgets:write'];
    return { orgId, role: 'member', permissions: new Set(permissions) };
  },
};

export async function createWidgetTable(owner: Kysely<any>): Promise<void> {
  await sql`create table if not exists edge_test_widgets (
    tenant_id uuid not null, id uuid not null, name text not null, primary key (tenant_id, id))`.execute(owner);
  await protectTenantTable(owner, 'edge_test_widgets');
}

export interface WidgetControls {
  /** Resolved by the test to let a held POST /slow-widgets finish. */
  release?: () => void;
  failNext: number;
  handlerCalls: number;
}

/** A module with real writes: POST creates one row per call (so duplicates would show in the table). */
export function widgetModule(controls: WidgetControls, database: Database): ModuleRoutes {
  const db = testTables(database);
  return {
    name: 'widgets-test',
    prefix: '/v1/orgs/:orgId',
    plugin: async (instance) => {
      const app = instance as unknown as App;
      const Body = Type.Object({ name: Type.String({ minLength: 1, maxLength: 50 }) }, { additionalProperties: false });
      const Widget = Type.Object({ id: Type.String(), name: Type.String() });
      const create = async (orgId: string, name: string) => {
        const id = newId();
        await db.withTenant(orgId, (trx) => trx.insertInto('edge_test_widgets').values({ tenant_id: orgId, id, name }).execute());
        return { id, name };
      };
      app.post(
        '/widgets',
        { schema: { body: Body, response: { 201: Widget } }, config: { permission: 'widgets:write' } },
        async (req, reply) => {
          controls.handlerCalls++;
          if (controls.failNext > 0) {
            controls.failNext--;
            throw new Error('simulated failure');
          }
          const widget = await create(accessOf(req).orgId, (req.body as { name: string }).name);
          if (widget.name === 'conflict') throw new AppError('WIDGETS.NAME_TAKEN', 409, 'That name is taken');
          return reply.code(201).header('location', `/v1/orgs/${accessOf(req).orgId}/widgets/${widget.id}`).send(widget);
        },
      );
      // Writes, then fails: a server error after the effect (what a crash between commit and response is).
      app.post(
        '/widgets-then-fail',
        { schema: { body: Body, response: { 201: Widget } }, config: { permission: 'widgets:write' } },
        async (req) => {
          controls.handlerCalls++;
          await create(accessOf(req).orgId, (req.body as { name: string }).name);
          throw new Error('simulated failure after the write');
        },
      );
      app.post(
        '/slow-widgets',
        { schema: { body: Body, response: { 201: Widget } }, config: { permission: 'widgets:write' } },
        async (req, reply) => {
          controls.handlerCalls++;
          await new Promise<void>((resolve) => {
            controls.release = resolve;
          });
          return reply.code(201).send(await create(accessOf(req).orgId, (req.body as { name: string }).name));
        },
      );
      app.get(
        '/widgets',
        {
          schema: { querystring: Type.Object({ limit: pageQuery.limit }), response: { 200: Type.Object({ data: Type.Array(Widget), count: Type.Integer() }) } },
          config: { permission: 'widgets:read' },
        },
        async (req) => {
          const orgId = accessOf(req).orgId;
          const rows = await db.withTenant(orgId, (trx) =>
            trx.selectFrom('edge_test_widgets').select(['id', 'name']).limit((req.query as { limit?: number }).limit ?? DEFAULT_PAGE_SIZE).execute(),
          );
          const [counted] = await db.withTenant(orgId, (trx) =>
            trx.selectFrom('edge_test_widgets').select((eb) => eb.fn.countAll<number>().as('n')).execute(),
          );
          return { data: rows, count: Number(counted?.n ?? 0) };
        },
      );
    },
  };
}

/** A public route (no principal): limited and idempotency-scoped per client IP. */
export const publicModule: ModuleRoutes = {
  name: 'public-test',
  prefix: '/v1/public',
  plugin: async (instance) => {
    const app = instance as unknown as App;
    let n = 0;
    app.post('/echo', { config: { public: true } }, async (req) => ({ n: ++n, body: req.body ?? null }));
    app.get('/ping', { config: { public: true } }, async () => ({ ok: true }));
  },
};

/** The real composition (createApiApp) with the test modules and authenticator added. */
export async function createEdgeTestApp(platform: Platform, controls: WidgetControls, modules?: Partial<Modules>): Promise<App> {
  return createApiApp(platform, {
    routes: [
      widgetModule(controls, platform.db),
      publicModule,
      ...(modules?.routes ?? []),
    ],
    authenticator: modules?.authenticator ?? testAuthenticator,
    rateLimits: modules?.rateLimits,
  });
}
