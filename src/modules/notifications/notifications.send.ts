import http from 'node:http';
import https from 'node:https';
import { isIP } from 'node:net';
import { bareHost, ForbiddenAddressError, isForbiddenAddress } from '../../platform/net/ssrf.ts';
import { BrokenCircuitError, BulkheadRejectedError, type DestinationPolicy } from '../../platform/resilience/policy.ts';
import { signPayload } from './notifications.crypto.ts';
import { guardedLookup, type UrlPolicy } from '../../platform/net/url-policy.ts';

export type ErrorKind =
  | 'http_4xx'
  | 'http_408'
  | 'http_429'
  | 'http_5xx'
  | 'timeout'
  | 'network'
  | 'circuit_open'
  | 'bulkhead_full'
  | 'forbidden_address';

export interface SendResult {
  ok: boolean;
  /** Worth another attempt later (5xx, 408, 429, network, timeout, open breaker, full bulkhead). */
  transient: boolean;
  statusCode: number | null;
  errorKind: ErrorKind | null;
  durationMs: number;
}

export interface WebhookMessage {
  url: string;
  /** The event id: the `Webhook-Id` header receivers deduplicate on. */
  id: string;
  body: string;
  secret: string;
  /** The org it is sent for: breakers are per destination, concurrency capped per org. */
  tenantId?: string;
}

class HttpStatusError extends Error {
  constructor(readonly status: number) {
    super(`receiver answered ${status}`);
  }
}

class TimeoutError extends Error {
  override name = 'TimeoutError';
}

/** One POST, no redirects followed, response body discarded. Rejects with HttpStatusError on non-2xx. */
function post(msg: WebhookMessage, signal: AbortSignal, timeoutMs: number, urlPolicy: UrlPolicy): Promise<number> {
  const timestamp = Math.floor(Date.now() / 1000);
  const u = new URL(msg.url);
  const client = u.protocol === 'https:' ? https : http;
  // Node does not call `lookup` for an IP literal: check it here (the address policy may have tightened since registration).
  if (urlPolicy.strict && isForbiddenAddress(bareHost(u.hostname)) && isIP(bareHost(u.hostname))) return Promise.reject(new ForbiddenAddressError(u.hostname));
  return new Promise<number>((resolve, reject) => {
    const req = client.request(
      u,
      {
        method: 'POST',
        lookup: guardedLookup(urlPolicy),
        headers: {
          'content-type': 'application/json',
          'content-length': Buffer.byteLength(msg.body),
          'user-agent': 'Plinth-Webhooks/1',
          'webhook-id': msg.id,
          'webhook-timestamp': String(timestamp),
          'webhook-signature': signPayload(msg.secret, msg.id, timestamp, msg.body),
        },
      },
      (res) => {
        res.resume();
        res.on('end', () => clearTimeout(timer));
        const status = res.statusCode ?? 0;
        if (status >= 200 && status < 300) resolve(status);
        else reject(new HttpStatusError(status));
      },
    );
    const timer = setTimeout(() => req.destroy(new TimeoutError(`no response within ${timeoutMs} ms`)), timeoutMs);
    const onAbort = () => req.destroy(new TimeoutError('cancelled by the webhook policy'));
    signal.addEventListener('abort', onAbort, { once: true });
    req.on('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    req.on('close', () => {
      clearTimeout(timer);
      signal.removeEventListener('abort', onAbort);
    });
    req.end(msg.body);
  });
}

function classify(err: unknown): { kind: ErrorKind; statusCode: number | null; transient: boolean } {
  if (err instanceof HttpStatusError) {
    const s = err.status;
    const kind: ErrorKind = s === 408 ? 'http_408' : s === 429 ? 'http_429' : s >= 500 ? 'http_5xx' : 'http_4xx';
    return { kind, statusCode: s, transient: kind !== 'http_4xx' };
  }
  if (err instanceof BrokenCircuitError) return { kind: 'circuit_open', statusCode: null, transient: true };
  if (err instanceof BulkheadRejectedError) return { kind: 'bulkhead_full', statusCode: null, transient: true };
  if (err instanceof ForbiddenAddressError) return { kind: 'forbidden_address', statusCode: null, transient: false };
  const name = (err as { name?: string })?.name;
  if (name === 'TimeoutError' || name === 'TaskCancelledError') return { kind: 'timeout', statusCode: null, transient: true };
  return { kind: 'network', statusCode: null, transient: true };
}

/**
 * Sends one signed webhook through `platform.policies.webhook` (timeout, breaker, bulkhead; durable retries
 * are the jobs layer's). Never throws: the caller records the outcome and decides whether to retry.
 */
export async function sendWebhook(
  msg: WebhookMessage,
  deps: { policy: DestinationPolicy; timeoutMs: number; urlPolicy: UrlPolicy },
): Promise<SendResult> {
  const started = performance.now();
  const durationMs = () => Math.round(performance.now() - started);
  try {
    // Keyed by endpoint, not host: tenants often share a receiver host (an integration platform) with their own paths.
    const scope = { destination: msg.url, tenantId: msg.tenantId };
    const status = await deps.policy.execute(scope, (signal) => post(msg, signal, deps.timeoutMs, deps.urlPolicy));
    return { ok: true, transient: false, statusCode: status, errorKind: null, durationMs: durationMs() };
  } catch (err) {
    const c = classify(err);
    return { ok: false, transient: c.transient, statusCode: c.statusCode, errorKind: c.kind, durationMs: durationMs() };
  }
}
