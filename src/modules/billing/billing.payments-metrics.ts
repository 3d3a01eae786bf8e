import client from 'prom-client';
import { registry } from '../../platform/observability/metrics.ts';

/** Labels are the gateway (two) and a fixed outcome word: bounded cardinality, never an org or a payment. */
function counter(name: string, help: string, labelNames: string[]): client.Counter<string> {
  return (registry.getSingleMetric(name) as client.Counter<string> | undefined) ?? new client.Counter({ name, help, labelNames, registers: [registry] });
}

/** Incoming payment webhooks by result: stored, duplicate, ignored, bad_signature, processed, stale. */
export const paymentWebhookEvents = counter('plinth_billing_payment_webhooks_total', 'Incoming payment-gateway webhooks, by gateway and result', ['gateway', 'result']);

/**
 * Drift found by the payment reconciliation, by kind (status, missing_at_gateway, amount, currency, org,
 * unavailable) and outcome (repaired, reported).
 */
export const paymentDrift = counter('plinth_billing_payment_drift_total', 'Differences between local payment attempts and the gateway, by kind and outcome', ['gateway', 'kind', 'outcome']);
