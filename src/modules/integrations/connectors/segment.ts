// The SDK (≈ 15 MB of RSS) is imported when a batch is delivered, not when the app starts.
import type { HTTPClient } from '@segment/analytics-node';
import { Type } from '@sinclair/typebox';
import { ConnectorError, defineConnector, parseRetryAfter } from '../integrations.connector.ts';
import { PRODUCT_EVENTS } from '../integrations.events.ts';
import { outboundUrlProblem } from '../../../platform/net/url-policy.ts';
import { distinctIdOf } from './posthog.ts';

/**
 * Segment (@segment/analytics-node): per batch, one `group` call per acting user (user ↔ organization
 * identity) and one `track` per event, sent as one `/v1/batch` request. The SDK's retries are off
 * (maxRetries 0) and its HTTP client reports the vendor's status and Retry-After to the framework.
 */
export const segmentConnector = defineConnector({
  name: 'segment',
  description: 'Product analytics events to Segment (track + group by organization)',
  config: Type.Object({ host: Type.String({ maxLength: 500, description: 'e.g. https://api.segment.io' }) }, { additionalProperties: false }),
  credentials: Type.Object({ writeKey: Type.String({ minLength: 1, maxLength: 200 }) }, { additionalProperties: false }),
  events: PRODUCT_EVENTS,
  maxBatch: 50,
  validate: (config, rules) => outboundUrlProblem(config.host, rules).then((p) => p && `host ${p}`),
  async deliver(batch, config, credentials, ctx) {
    const problem = await outboundUrlProblem(config.host, ctx.urlRules);
    if (problem) throw new ConnectorError(`host ${problem}`, 400);
    const httpClient: HTTPClient = {
      async makeRequest(req) {
        const res = await fetch(req.url, { method: req.method, headers: req.headers, body: req.body, signal: ctx.signal });
        if (res.status < 200 || res.status >= 300) throw new ConnectorError(`Segment answered ${res.status}`, res.status, parseRetryAfter(res.headers.get('retry-after')));
        return { status: res.status, statusText: res.statusText, headers: res.headers };
      },
    };
    const users = [...new Set(batch.map((e) => distinctIdOf(e.payload, e.tenantId)))];
    const { Analytics } = await import('@segment/analytics-node');
    const analytics = new Analytics({ writeKey: credentials.writeKey, host: config.host, path: '/v1/batch', maxRetries: 0, flushAt: batch.length + users.length, flushInterval: 10_000, httpClient });
    const failures: unknown[] = [];
    const onDone = (err?: unknown) => void (err && failures.push(err));
    for (const userId of users) analytics.group({ userId, groupId: batch[0]!.tenantId, messageId: `group-${batch[0]!.id}-${userId}` }, onDone);
    for (const e of batch) {
      analytics.track(
        {
          userId: distinctIdOf(e.payload, e.tenantId),
          event: e.name,
          messageId: e.id, // Segment deduplicates on it: a retried batch counts once
          timestamp: new Date(e.occurredAt),
          properties: { ...e.payload, source: 'plinth' },
          context: { groupId: e.tenantId },
        },
        onDone,
      );
    }
    await analytics.closeAndFlush({ timeout: 15_000 });
    if (failures.length > 0) throw failures.find((f) => f instanceof ConnectorError) ?? failures[0];
  },
});
