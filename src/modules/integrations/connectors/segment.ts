// The SDK (≈ 15 MB of RSS) is imported when a batch is delivered, not when the app starts.
import type { HTTPClient } from '@segment/analytics-node';
import { Type } from '@sinclair/typebox';
import { ConnectorError, defineConnector, parseRetryAfter } from '../integrations.connector.ts';
import { ANALYTICS_EVENTS } from '../integrations.events.ts';
import { outboundUrlProblem } from '../../../platform/net/url-policy.ts';
import { analyticsCall, groupTraitsOf } from './analytics.ts';

/**
 * Segment (@segment/analytics-node): per batch, an `identify` per user an event introduces (signup, joining),
 * one `group` call per acting user (user ↔ organization, with the org's traits) and one `track` per event, sent as one `/v1/batch` request. The SDK's retries are off
 * (maxRetries 0) and its HTTP client reports the vendor's status and Retry-After to the framework.
 */
export const segmentConnector = defineConnector({
  name: 'segment',
  description: 'Product analytics events to Segment (identify, group by organization, track)',
  config: Type.Object({ host: Type.String({ maxLength: 500, description: 'e.g. https://api.segment.io' }) }, { additionalProperties: false }),
  credentials: Type.Object({ writeKey: Type.String({ minLength: 1, maxLength: 200 }) }, { additionalProperties: false }),
  events: ANALYTICS_EVENTS,
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
    const calls = batch.map((e) => ({ e, call: analyticsCall(e) }));
    const users = [...new Set(calls.map((c) => c.call.userId))];
    const traits = groupTraitsOf(calls.map((c) => c.call), ctx.tenantId);
    const { Analytics } = await import('@segment/analytics-node');
    const analytics = new Analytics({ writeKey: credentials.writeKey, host: config.host, path: '/v1/batch', maxRetries: 0, flushAt: batch.length * 2 + users.length, flushInterval: 10_000, httpClient });
    const failures: unknown[] = [];
    const onDone = (err?: unknown) => void (err && failures.push(err));
    for (const { e, call } of calls) if (call.identify) analytics.identify({ userId: call.userId, traits: call.identify, messageId: `identify-${e.id}`, timestamp: new Date(e.occurredAt) }, onDone);
    for (const userId of users) analytics.group({ userId, groupId: ctx.tenantId, traits, messageId: `group-${batch[0]!.id}-${userId}` }, onDone);
    for (const { e, call } of calls) {
      analytics.track(
        {
          userId: call.userId,
          event: call.event,
          messageId: e.id, // Segment deduplicates on it: a retried batch counts once
          timestamp: new Date(e.occurredAt),
          properties: { ...call.properties, source: 'plinth' },
          context: { groupId: e.tenantId },
        },
        onDone,
      );
    }
    await analytics.closeAndFlush({ timeout: 15_000 });
    if (failures.length > 0) throw failures.find((f) => f instanceof ConnectorError) ?? failures[0];
  },
});
