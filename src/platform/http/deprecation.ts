import { Type } from '@sinclair/typebox';
import { sql } from 'kysely';
import type { Database } from '../db/database.ts';
import { createIntervalCounter } from '../observability/interval-counter.ts';
import { deprecatedRequests } from '../observability/metrics.ts';
import { PLATFORM_ADMIN } from './auth.ts';
import { DateTime } from './schemas.ts';
import type { App } from './server.ts';

/**
 * API evolution (docs/api-versioning.md): an operation is deprecated by declaring it in its route config,
 *   config: { deprecated: { since: '2026-12-01', sunset: '2027-06-01', link: 'https://…/migrate-x' } }
 * and then every response carries `Deprecation` (RFC 9745), `Sunset` (RFC 8594) and a `Link` to the
 * migration note; the OpenAPI document marks it `deprecated: true`; calls are counted per route (metric)
 * and per org and day (`GET /v1/admin/deprecations`), so it is retired only once nobody calls it.
 */
export interface Deprecation {
  /** The day it became deprecated (ISO date). */
  since: string;
  /** The day it will stop working (ISO date); at least the policy's notice after `since`. */
  sunset: string;
  /** The migration note. */
  link: string;
}

declare module 'fastify' {
  interface FastifyContextConfig {
    deprecated?: Deprecation;
  }
}

interface Declared extends Deprecation {
  method: string;
  route: string;
}

export function registerDeprecations(app: App, deps: { db: Database; flushMs?: number }): void {
  const db = deps.db.scope('api_deprecated_usage');
  const declared: Declared[] = [];
  // Per (route, org) since the last flush; a batch the database did not take is written again next time.
  const counts = createIntervalCounter({
    fields: ['requests'] as const,
    write: async (batch) => {
      const rows = [...batch.counts].map(([key, c]) => {
        const [route, org] = key.split('\t') as [string, string];
        return { route, org_id: org, day: sql<Date>`current_date`, requests: c.requests };
      });
      await db.app
        .insertInto('api_deprecated_usage')
        .values(rows)
        .onConflict((oc) =>
          oc.columns(['route', 'org_id', 'day']).doUpdateSet({ requests: sql`api_deprecated_usage.requests + excluded.requests`, last_seen_at: sql`now()` }),
        )
        .execute();
    },
  });

  app.addHook('onRoute', (route) => {
    const d = route.config?.deprecated;
    if (!d) return;
    for (const v of [d.since, d.sunset]) if (Number.isNaN(Date.parse(v))) throw new Error(`${route.url}: deprecation dates must be ISO dates, got ${v}`);
    for (const method of [route.method].flat()) if (method !== 'HEAD') declared.push({ ...d, method, route: route.url });
    route.schema = {
      ...route.schema,
      deprecated: true,
      // Machine-readable for the contract check (clients/typescript/contract.ts): past it, removal is allowed.
      'x-sunset': d.sunset,
      description: `${route.schema?.description ?? ''}\n\n**Deprecated** since ${d.since}; removed on ${d.sunset}. Migration: ${d.link}`.trim(),
    } as typeof route.schema; // @fastify/swagger copies `x-` keys of a route schema into its operation
  });

  app.addHook('onSend', async (request, reply, payload) => {
    const d = request.routeOptions.config?.deprecated;
    if (!d) return payload;
    reply.header('deprecation', `@${Math.floor(Date.parse(d.since) / 1000)}`);
    reply.header('sunset', new Date(d.sunset).toUTCString());
    reply.header('link', `<${d.link}>; rel="deprecation"; type="text/html"`);
    const route = request.routeOptions.url ?? 'unmatched';
    deprecatedRequests.inc({ method: request.method, route });
    const key = `${request.method} ${route}\t${request.access?.orgId ?? ''}`;
    counts.add(key, { requests: 1 });
    return payload;
  });

  counts.start(deps.flushMs ?? 30_000);
  app.addHook('onClose', () => counts.stop());

  app.get('/v1/admin/deprecations', {
    config: { permission: PLATFORM_ADMIN },
    schema: {
      tags: ['Operations'],
      security: [{ bearer: [] }],
      operationId: 'listDeprecations',
      summary: 'Deprecated operations, their sunset, and who still calls them (per org, over the last `days` days)',
      querystring: Type.Object({ days: Type.Integer({ minimum: 1, maximum: 365, default: 30 }) }, { additionalProperties: false }),
      response: {
        200: Type.Object({
          data: Type.Array(
            Type.Object({
              method: Type.String(),
              route: Type.String(),
              since: Type.String(),
              sunset: Type.String(),
              link: Type.String(),
              orgs: Type.Array(Type.Object({ orgId: Type.Union([Type.String(), Type.Null()]), requests: Type.Integer(), lastSeenAt: DateTime() })),
            }),
          ),
        }),
      },
    },
  }, async (req) => {
    await counts.flush();
    const rows = await db.app
      .selectFrom('api_deprecated_usage')
      .select(['route', 'org_id', sql<string>`sum(requests)`.as('requests'), sql<Date>`max(last_seen_at)`.as('last_seen_at')])
      .where('day', '>=', sql<Date>`current_date - ${(req.query as { days: number }).days}::int`)
      .groupBy(['route', 'org_id'])
      .orderBy('route')
      .orderBy(sql`sum(requests)`, 'desc')
      .execute();
    return {
      data: declared.map((d) => ({
        ...d,
        orgs: rows
          .filter((r) => r.route === `${d.method} ${d.route}`)
          .map((r) => ({ orgId: r.org_id || null, requests: Number(r.requests), lastSeenAt: r.last_seen_at })),
      })),
    };
  });

}
