import client from 'prom-client';
import { registry } from '../../platform/observability/metrics.ts';

/** Labels are the connector (a handful), never a tenant or a connection: bounded cardinality. */
function counter(name: string, help: string, labelNames: string[]): client.Counter<string> {
  return (registry.getSingleMetric(name) as client.Counter<string> | undefined) ?? new client.Counter({ name, help, labelNames, registers: [registry] });
}
function gauge(name: string, help: string, labelNames: string[]): client.Gauge<string> {
  return (registry.getSingleMetric(name) as client.Gauge<string> | undefined) ?? new client.Gauge({ name, help, labelNames, registers: [registry] });
}

/** Events sent through connectors, by outcome: succeeded, retry (transient failure), dead (dead-lettered). */
export const integrationDeliveries = counter('plinth_integration_deliveries_total', 'Outbox events sent through integration connectors, by outcome', ['connector', 'outcome']);
/** Vendor calls by connector and result (one call carries a batch). */
export const integrationCalls = counter('plinth_integration_calls_total', 'Vendor calls made by integration connectors', ['connector', 'result']);
export const integrationLastSuccess = gauge('plinth_integration_last_success_timestamp_seconds', 'Last successful vendor call per connector (any tenant)', ['connector']);
