import { Type } from '@sinclair/typebox';
// The SDK (≈ 14 MB of RSS) is imported when a batch is delivered, not when the app starts.
import { defineConnector } from '../integrations.connector.ts';
import { ANALYTICS_EVENTS } from '../integrations.events.ts';
import { analyticsCall, groupTraitsOf } from './analytics.ts';
import { outboundUrlProblem } from '../../../platform/net/url-policy.ts';


/**
 * PostHog (posthog-node): the org as a group (`groupIdentify`) and product events as `capture` calls in it, one `/batch/` request
 * per delivery batch. The SDK's own retries are off: the framework retries durably (and honours 429 +
 * Retry-After, which the SDK's error carries as `retryAfterMs`).
 */
export const posthogConnector = defineConnector({
  name: 'posthog',
  description: 'Product analytics events to PostHog (capture, identify, grouped by organization)',
  config: Type.Object({ host: Type.String({ maxLength: 500, description: 'e.g. https://eu.i.posthog.com' }) }, { additionalProperties: false }),
  credentials: Type.Object({ projectApiKey: Type.String({ minLength: 1, maxLength: 200 }) }, { additionalProperties: false }),
  events: ANALYTICS_EVENTS,
  maxBatch: 50,
  validate: (config, rules) => outboundUrlProblem(config.host, rules).then((p) => p && `host ${p}`),
  async deliver(batch, config, credentials, ctx) {
    const problem = await outboundUrlProblem(config.host, ctx.urlRules);
    if (problem) throw Object.assign(new Error(`host ${problem}`), { status: 400 });
    const { PostHog } = await import('posthog-node');
    const client = new PostHog(credentials.projectApiKey, {
      host: config.host,
      flushAt: batch.length + 2, // flushed below, as one request
      flushInterval: 0,
      fetchRetryCount: 0,
      requestTimeout: 10_000,
      disableGeoip: true,
      fetch: (url, options) => fetch(url, { ...options, signal: ctx.signal } as RequestInit) as never,
    });
    try {
      const calls = batch.map((e) => ({ e, call: analyticsCall(e) }));
      // Identity: the organization as a PostHog group (one $groupidentify per batch, in the same request),
      // and a person's $identify when the event introduces them (signup, joining).
      client.groupIdentify({ groupType: 'organization', groupKey: ctx.tenantId, properties: groupTraitsOf(calls.map((c) => c.call), ctx.tenantId) });
      for (const { e, call } of calls) {
        if (call.identify) client.identify({ distinctId: call.userId, properties: call.identify });
        client.capture({
          distinctId: call.userId,
          event: call.event,
          uuid: e.id, // PostHog deduplicates on it: a retried batch counts once
          timestamp: new Date(e.occurredAt),
          properties: { ...call.properties, source: 'plinth' },
          groups: { organization: e.tenantId },
        });
      }
      // capture() prepares each message asynchronously; this flush waits for them, then sends one batch and
      // rejects with the HTTP error (public flush() could run before the messages are queued).
      await (client as unknown as { flushWithPendingPromises(): Promise<void> }).flushWithPendingPromises();
    } finally {
      await client.shutdown(1_000).catch(() => undefined);
    }
  },
});
