import { Type } from '@sinclair/typebox';
import type { FastifyRequest } from 'fastify';
import { Uuid } from '../../platform/http/schemas.ts';
import type { App } from '../../platform/http/server.ts';
import type { Inbound } from './integrations.inbound.ts';

const RAW = Symbol('rawBody');
type WithRaw = FastifyRequest & { [RAW]?: string };

/** Vendor webhooks into Plinth: public (the vendor's signature is the authentication), raw body kept for it. */
export async function inboundRoutes(app: App, opts: { inbound: Inbound; publicUrl: string }): Promise<void> {
  // Encapsulated: only this plugin's routes keep the raw text (the signature covers the exact bytes).
  const parse = app.getDefaultJsonParser('error', 'error');
  app.removeContentTypeParser('application/json');
  app.addContentTypeParser('application/json', { parseAs: 'string', bodyLimit: 256 * 1024 }, (request, body, done) => {
    (request as WithRaw)[RAW] = String(body);
    parse(request, String(body), done);
  });

  app.post(
    '/hooks/integrations/:orgId/:integrationId',
    {
      config: { public: true },
      schema: {
        tags: ['integrations'],
        summary: 'Inbound vendor webhook (HubSpot v3 signature): verified, stored, deduplicated, processed asynchronously',
        params: Type.Object({ orgId: Uuid(), integrationId: Uuid() }),
        body: Type.Array(Type.Record(Type.String({ maxLength: 100 }), Type.Unknown(), { maxProperties: 50 }), { minItems: 1, maxItems: 100 }),
        response: { 200: Type.Object({ received: Type.Integer(), duplicates: Type.Integer() }, { additionalProperties: false }) },
      },
    },
    async (request) =>
      opts.inbound.receive(
        request.params.orgId,
        request.params.integrationId,
        { method: request.method, url: `${opts.publicUrl}${request.url}`, rawBody: (request as WithRaw)[RAW] ?? '', headers: request.headers },
        request.body,
      ),
  );
}
