import { Type } from '@sinclair/typebox';
import type { FastifyRequest } from 'fastify';
import type { App } from '../../platform/http/server.ts';
import type { PaymentWebhooks } from './use-cases/payment-webhooks.ts';

const RAW = Symbol('rawBody');
type WithRaw = FastifyRequest & { [RAW]?: string };

/** Stripe's events are a few KB; a megabyte-sized body is not one of them (413, nothing read further). */
export const PAYMENT_WEBHOOK_BODY_LIMIT = 256 * 1024;

/**
 * Incoming payment-gateway webhooks: public (the gateway's signature over the raw body is the
 * authentication), verified, stored in the inbox, answered at once; processed by the `billing.payment_events` job.
 */
export async function paymentWebhookRoutes(app: App, opts: { webhooks: PaymentWebhooks }): Promise<void> {
  // Encapsulated in this plugin: only these routes keep the raw text (the signature covers the exact bytes).
  const parse = app.getDefaultJsonParser('error', 'error');
  app.removeContentTypeParser('application/json');
  app.addContentTypeParser('application/json', { parseAs: 'string', bodyLimit: PAYMENT_WEBHOOK_BODY_LIMIT }, (request, body, done) => {
    (request as WithRaw)[RAW] = String(body);
    parse(request, String(body), done);
  });

  app.post(
    '/webhooks/payments/:gateway',
    {
      config: { public: true },
      schema: {
        tags: ['billing'],
        summary: 'Incoming payment-gateway webhook (Stripe-Signature / Sandbox-Signature): verified, stored, deduplicated, processed asynchronously',
        params: Type.Object({ gateway: Type.Union([Type.Literal('stripe'), Type.Literal('sandbox')]) }),
        // The gateway's event, whose fields the gateway extends at will (additional properties allowed):
        // only its envelope is required here; what billing reads comes from the verified raw body.
        body: Type.Object(
          {
            id: Type.String({ minLength: 1, maxLength: 255 }),
            type: Type.String({ minLength: 1, maxLength: 200 }),
            created: Type.Integer(),
            data: Type.Object({ object: Type.Object({}, { additionalProperties: true }) }, { additionalProperties: true }),
          },
          { additionalProperties: true },
        ),
        response: { 200: Type.Object({ received: Type.Boolean(), duplicate: Type.Boolean() }, { additionalProperties: false }) },
      },
    },
    async (request) => opts.webhooks.receive(request.params.gateway, (request as WithRaw)[RAW] ?? '', request.headers),
  );
}
