import { BrokenCircuitError, BulkheadRejectedError, TaskCancelledError, type DestinationPolicy } from '../../platform/resilience/policy.ts';
import { GatewayUnavailableError, type PaymentGateway } from './billing.gateway.ts';

/**
 * Every call of a gateway through the platform's `payment` DestinationPolicy, with the gateway's name as the
 * destination (one breaker and bulkhead per gateway) and the org as tenant (the per-tenant cap): timeout,
 * retry of transient failures with backoff, breaker, bulkhead.
 *
 * A retry is safe only because it is the same call again: the closure re-sends the caller's idempotency
 * key, so the gateway replays its stored result instead of charging twice. Reads (retrievePayment) are
 * naturally safe.
 *
 * Callers see only the port's errors: the policy's own refusals (timeout, open breaker, full bulkhead) are
 * GatewayUnavailableError — the outcome of the call is unknown or it was not made; retry later with the
 * same key. GatewayRequestError (our request was wrong) passes through and is neither retried nor counted
 * by the breaker.
 */
export function guardedGateway(gateway: PaymentGateway, policy: DestinationPolicy): PaymentGateway {
  const destination = `gateway:${gateway.name}`;
  const run = <T>(tenantId: string | undefined, fn: () => Promise<T>): Promise<T> =>
    policy.execute({ destination, tenantId: tenantId ?? null }, () => fn().catch((err) => Promise.reject(transient(err)))).catch((err) => Promise.reject(unwrap(err, gateway)));
  return {
    name: gateway.name,
    createCustomer: (input, key) => run(input.orgId, () => gateway.createCustomer(input, key)),
    attachPaymentMethod: (input, key) => run(undefined, () => gateway.attachPaymentMethod(input, key)),
    charge: (input, key) => run(input.metadata.orgId, () => gateway.charge(input, key)),
    refund: (input, key) => run(input.metadata?.orgId, () => gateway.refund(input, key)),
    retrievePayment: (id) => run(undefined, () => gateway.retrievePayment(id)),
  };
}

/**
 * The policy's isTransientError knows HTTP statuses and network codes, not the port's errors: an
 * unavailable gateway is presented as a 503 for the retry and breaker decisions, and unwrapped after.
 */
class TransientGatewayFailure extends Error {
  readonly statusCode = 503;
  constructor(readonly original: GatewayUnavailableError) {
    super(original.message);
  }
}

function transient(err: unknown): unknown {
  return err instanceof GatewayUnavailableError ? new TransientGatewayFailure(err) : err;
}

function unwrap(err: unknown, gateway: PaymentGateway): unknown {
  if (err instanceof TransientGatewayFailure) return err.original;
  if (err instanceof TaskCancelledError) return new GatewayUnavailableError(`${gateway.name} did not answer in time`, gateway.name, { cause: err });
  if (err instanceof BrokenCircuitError) return new GatewayUnavailableError(`${gateway.name} circuit breaker is open`, gateway.name, { cause: err });
  if (err instanceof BulkheadRejectedError) return new GatewayUnavailableError(`${gateway.name} bulkhead is full`, gateway.name, { cause: err });
  return err;
}
