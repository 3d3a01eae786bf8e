import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createOutboundPolicies, OUTBOUND_LIMITS } from '../../platform/resilience/policy.ts';
import { newSigningSecret } from './notifications.crypto.ts';
import { sendWebhook } from './notifications.send.ts';

/**
 * One tenant's failing or slow receiver must not stall another tenant's webhooks: breakers are per
 * destination, concurrency is capped per tenant (the process's real webhook policy, as main.ts builds it).
 */
const servers: Server[] = [];
async function receiver(answer: (path: string) => number | 'hang'): Promise<string> {
  const server = createServer((req, res) => {
    req.resume();
    req.on('end', () => {
      const a = answer(req.url ?? '/');
      if (a !== 'hang') res.writeHead(a).end();
    });
  });
  servers.push(server);
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}/hook`;
}

let failing: string;
let healthy: string;
let slow: string;
beforeAll(async () => {
  failing = await receiver(() => 500);
  healthy = await receiver(() => 200);
  slow = await receiver(() => 'hang');
});
afterAll(async () => {
  for (const s of servers) {
    s.closeAllConnections();
    await new Promise((r) => s.close(r));
  }
});

const msg = (url: string, tenantId: string) => ({ url, id: `evt_${Math.random()}`, body: '{}', secret: newSigningSecret(), tenantId });

describe('per-destination webhook breakers and per-tenant bulkheads', () => {
  it("org A's receiver answering 500 opens only its own breaker; org B's deliveries keep succeeding", async () => {
    const policies = createOutboundPolicies();
    const deps = { policy: policies.webhook, timeoutMs: 2_000, urlPolicy: { strict: false } };
    const threshold = OUTBOUND_LIMITS.webhook.breaker.threshold;
    for (let i = 0; i < threshold; i++) {
      expect((await sendWebhook(msg(failing, 'org-a'), deps)).errorKind).toBe('http_5xx');
      // interleaved: B is unaffected all along
      expect((await sendWebhook(msg(healthy, 'org-b'), deps)).ok).toBe(true);
    }
    expect(policies.webhook.breakerState(failing)).toBe('open');
    expect((await sendWebhook(msg(failing, 'org-a'), deps)).errorKind).toBe('circuit_open');
    for (let i = 0; i < 5; i++) expect((await sendWebhook(msg(healthy, 'org-b'), deps)).ok).toBe(true);
    expect(policies.webhook.breakerState(healthy)).toBe('closed');
  });

  it('two orgs on one receiver host (different paths, as on an integration platform) are isolated too', async () => {
    const policies = createOutboundPolicies();
    const deps = { policy: policies.webhook, timeoutMs: 2_000, urlPolicy: { strict: false } };
    const shared = await receiver((path) => (path.startsWith('/broken') ? 500 : 200));
    const origin = new URL(shared).origin;
    for (let i = 0; i < OUTBOUND_LIMITS.webhook.breaker.threshold; i++) await sendWebhook(msg(`${origin}/broken/org-a`, 'org-a'), deps);
    expect((await sendWebhook(msg(`${origin}/broken/org-a`, 'org-a'), deps)).errorKind).toBe('circuit_open');
    expect((await sendWebhook(msg(`${origin}/fine/org-b`, 'org-b'), deps)).ok).toBe(true);
  });

  it("org A's slow receivers hold at most its own cap of concurrent deliveries; org B still gets through", async () => {
    const policies = createOutboundPolicies();
    const deps = { policy: policies.webhook, timeoutMs: 1_000, urlPolicy: { strict: false } };
    const cap = OUTBOUND_LIMITS.webhook.perTenantLimit;
    const stuck = Array.from({ length: cap }, (_, i) => sendWebhook(msg(`${slow}?n=${i}`, 'org-a'), deps));
    await new Promise((r) => setTimeout(r, 50));
    expect((await sendWebhook(msg(healthy, 'org-a'), deps)).errorKind).toBe('bulkhead_full');
    expect((await sendWebhook(msg(healthy, 'org-b'), deps)).ok).toBe(true);
    const results = await Promise.all(stuck);
    expect(results.every((r) => r.errorKind === 'timeout')).toBe(true);
    // the cap is released once A's deliveries finish
    expect((await sendWebhook(msg(healthy, 'org-a'), deps)).ok).toBe(true);
  });
});
