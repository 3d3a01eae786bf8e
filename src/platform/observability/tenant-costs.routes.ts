import { Type } from '@sinclair/typebox';
import { PLATFORM_ADMIN } from '../http/auth.ts';
import type { App } from '../http/server.ts';
import { COST_ORDER, type TenantCosts } from './tenant-costs.ts';

const Row = Type.Object({
  orgId: Type.String({ format: 'uuid' }),
  requests: Type.Integer(),
  requestMs: Type.Integer(),
  dbMs: Type.Integer({ description: 'Milliseconds inside the org\'s tenant transactions' }),
  jobs: Type.Integer(),
  jobMs: Type.Integer(),
  storageBytes: Type.Union([Type.Integer(), Type.Null()], { description: 'Latest daily measurement of the org\'s rows (null: not measured yet)' }),
});

/** Operators' view of what each organization costs: the most expensive first. */
export function registerTenantCostRoutes(app: App, costs: TenantCosts): void {
  app.get('/v1/admin/tenant-costs', {
    config: { permission: PLATFORM_ADMIN },
    schema: {
      tags: ['Operations'],
      security: [{ bearer: [] }],
      operationId: 'listTenantCosts',
      summary: 'Organizations by what they cost over the last `days` days (requests, time, database time, jobs, storage)',
      querystring: Type.Object(
        {
          days: Type.Integer({ minimum: 1, maximum: 90, default: 7 }),
          by: Type.Union(Object.keys(COST_ORDER).map((k) => Type.Literal(k)), { default: 'dbMs' }),
          limit: Type.Integer({ minimum: 1, maximum: 100, default: 20 }),
        },
        { additionalProperties: false },
      ),
      response: { 200: Type.Object({ data: Type.Array(Row) }) },
    },
  }, async (req) => {
    await costs.flush();
    const q = req.query as { days: number; by: keyof typeof COST_ORDER; limit: number };
    return { data: await costs.top(q) };
  });
}
