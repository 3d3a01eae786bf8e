import http from 'node:http';
import https from 'node:https';
import { Type } from '@sinclair/typebox';
import { ConnectorError, defineConnector, parseRetryAfter, type ConnectorEvent } from '../integrations.connector.ts';
import { PRODUCT_EVENTS } from '../integrations.events.ts';
import { guardedLookup, outboundUrlProblem, type UrlPolicy } from '../../../platform/net/url-policy.ts';

/**
 * Fills a JSON mapping template: a string that is exactly `{{path}}` becomes the value at that path of
 * `{ event: { id, name, occurredAt, tenantId }, payload }` (any JSON type); `{{path}}` inside a longer
 * string is interpolated; everything else is copied. Unknown paths give null.
 */
export function applyTemplate(template: unknown, e: ConnectorEvent): unknown {
  const scope = { event: { id: e.id, name: e.name, occurredAt: e.occurredAt, tenantId: e.tenantId }, payload: e.payload };
  const lookup = (path: string): unknown => path.split('.').reduce<unknown>((v, k) => (v && typeof v === 'object' ? (v as Record<string, unknown>)[k] : undefined), scope) ?? null;
  const walk = (t: unknown): unknown => {
    if (typeof t === 'string') {
      const whole = /^\{\{\s*([\w.]+)\s*\}\}$/.exec(t);
      if (whole) return lookup(whole[1]!);
      return t.replace(/\{\{\s*([\w.]+)\s*\}\}/g, (_m, p: string) => String(lookup(p) ?? ''));
    }
    if (Array.isArray(t)) return t.map(walk);
    if (t && typeof t === 'object') return Object.fromEntries(Object.entries(t).map(([k, v]) => [k, walk(v)]));
    return t;
  };
  return walk(template);
}

function post(url: string, body: string, headers: Record<string, string>, rules: UrlPolicy, signal: AbortSignal): Promise<void> {
  const u = new URL(url);
  const client = u.protocol === 'https:' ? https : http;
  return new Promise((resolve, reject) => {
    const req = client.request(
      u,
      { method: 'POST', lookup: guardedLookup(rules), signal, headers: { ...headers, 'content-type': 'application/json', 'content-length': Buffer.byteLength(body), 'user-agent': 'Plinth-Integrations/1' } },
      (res) => {
        res.resume();
        const status = res.statusCode ?? 0;
        if (status >= 200 && status < 300) return resolve();
        const retryAfter = parseRetryAfter(res.headers['retry-after'] as string | undefined);
        reject(new ConnectorError(`receiver answered ${status}`, status, retryAfter));
      },
    );
    req.on('error', reject);
    req.end(body);
  });
}

/** Everything without a dedicated connector: each event POSTed as JSON shaped by a mapping template. */
export const httpConnector = defineConnector({
  name: 'http',
  description: 'Generic outbound HTTP: each event POSTed as JSON built from a mapping template (webhook SSRF rules apply)',
  config: Type.Object(
    {
      url: Type.String({ maxLength: 2048 }),
      template: Type.Optional(Type.Unknown({ description: 'JSON with {{event.name}}, {{payload.taskId}} …; default: the event itself' })),
    },
    { additionalProperties: false },
  ),
  credentials: Type.Object(
    { headers: Type.Optional(Type.Record(Type.String({ pattern: '^[A-Za-z0-9-]{1,100}$' }), Type.String({ maxLength: 2000 }), { maxProperties: 10 })) },
    { additionalProperties: false },
  ),
  events: PRODUCT_EVENTS,
  maxBatch: 1,
  validate: (config, rules) => outboundUrlProblem(config.url, rules).then((p) => p && `url ${p}`),
  async deliver(batch, config, credentials, ctx) {
    const problem = await outboundUrlProblem(config.url, ctx.urlRules);
    if (problem) throw new ConnectorError(`url ${problem}`, 400);
    for (const e of batch) {
      const body = JSON.stringify(config.template === undefined ? e : applyTemplate(config.template, e));
      await post(config.url, body, { ...credentials.headers, 'idempotency-key': e.id }, ctx.urlRules, ctx.signal);
    }
  },
});
