import Stripe from 'stripe';
import {
  GatewayRequestError,
  GatewayUnavailableError,
  type GatewayFailureCode,
  type GatewayPayment,
  type GatewayPaymentStatus,
  type GatewayRefund,
  type PaymentGateway,
} from './billing.gateway.ts';

/**
 * The `stripe` adapter of the PaymentGateway port, over the official SDK. The SDK's own network retries are
 * off (`maxNetworkRetries: 0`): retries belong to the caller's resilience policy (billing.gateway-guard.ts),
 * which repeats a call with the same idempotency key, so there is one retry rule and one place that counts
 * failures for the breaker. Every mutating call carries the caller's key as `Idempotency-Key` (the SDK still
 * repeats a request once when the connection closes under it — with that same key, so it is safe).
 */
export interface StripeGatewayOptions {
  secretKey: string;
  /** Base URL of the API (tests and local emulators): `http://127.0.0.1:12111`. Default: api.stripe.com. */
  apiBase?: string;
  /** Socket-level timeout per request; the policy's timeout is the outer bound. */
  timeoutMs?: number;
}

type StripeClient = InstanceType<typeof Stripe>;
type PaymentIntent = Stripe.PaymentIntent;

/** The SDK settings for a base URL: host, port and protocol are the SDK's documented knobs. */
export function stripeClientOptions(opts: StripeGatewayOptions): NonNullable<ConstructorParameters<typeof Stripe>[1]> {
  const base = opts.apiBase ? new URL(opts.apiBase) : undefined;
  return {
    maxNetworkRetries: 0,
    timeout: opts.timeoutMs ?? 10_000,
    telemetry: false,
    appInfo: { name: 'plinth' },
    ...(base
      ? {
          host: base.hostname,
          port: base.port || (base.protocol === 'http:' ? 80 : 443),
          protocol: base.protocol === 'http:' ? ('http' as const) : ('https' as const),
        }
      : {}),
  };
}

const STATUS: Record<Stripe.PaymentIntent.Status, GatewayPaymentStatus> = {
  succeeded: 'succeeded',
  processing: 'processing',
  requires_capture: 'processing',
  requires_action: 'requires_action',
  requires_confirmation: 'requires_action',
  // Confirmed and declined: Stripe keeps the intent reusable; for billing this attempt failed.
  requires_payment_method: 'failed',
  canceled: 'canceled',
};

/** Stripe's error code / decline code → the port's failure words (decline codes are the more precise). */
export function stripeFailureCode(code: string | null | undefined, declineCode: string | null | undefined): GatewayFailureCode {
  for (const c of [declineCode, code]) {
    switch (c) {
      case 'insufficient_funds':
      case 'authentication_required':
      case 'processing_error':
      case 'expired_card':
        return c;
    }
  }
  if (code === 'card_declined' || declineCode) return 'card_declined';
  return 'other';
}

function toPayment(pi: PaymentIntent): GatewayPayment {
  const charge = typeof pi.latest_charge === 'object' && pi.latest_charge !== null ? pi.latest_charge : undefined;
  const error = pi.last_payment_error;
  let status = STATUS[pi.status] ?? 'processing';
  const failureCode = error ? stripeFailureCode(error.code, error.decline_code) : undefined;
  // Off-session and the bank wants the customer (3-D Secure): the customer must act, not a new card.
  if (status === 'failed' && failureCode === 'authentication_required') status = 'requires_action';
  // A requires_payment_method intent that was never confirmed has not failed yet.
  if (status === 'failed' && !error) status = 'requires_action';
  return {
    gatewayPaymentId: pi.id,
    status,
    amount: pi.amount,
    currency: pi.currency.toUpperCase(),
    amountRefunded: charge?.amount_refunded ?? 0,
    ...(status === 'failed' || status === 'requires_action' ? (failureCode ? { failureCode, failureMessage: error?.message ?? undefined } : {}) : {}),
    metadata: { ...(pi.metadata ?? {}) },
    createdAt: new Date(pi.created * 1000),
  };
}

/**
 * Not-a-result errors → the port's two exceptions. Unknown outcome (no answer, 5xx, 429, timeout) →
 * GatewayUnavailableError: retry with the same key. Our request was wrong (4xx, idempotency key reused
 * with other parameters, auth) → GatewayRequestError: never retried.
 */
export function mapStripeError(err: unknown): Error {
  if (!(err instanceof Stripe.errors.StripeError)) {
    return new GatewayUnavailableError(`stripe call failed: ${(err as Error)?.message ?? String(err)}`, 'stripe', { cause: err });
  }
  const status = err.statusCode;
  if (err instanceof Stripe.errors.StripeConnectionError || err instanceof Stripe.errors.StripeAPIError || err instanceof Stripe.errors.StripeRateLimitError) {
    return new GatewayUnavailableError(`stripe unavailable: ${err.message}`, 'stripe', { cause: err });
  }
  if (status !== undefined && (status >= 500 || status === 429 || status === 408)) {
    return new GatewayUnavailableError(`stripe unavailable (${status}): ${err.message}`, 'stripe', { cause: err });
  }
  const code = err instanceof Stripe.errors.StripeIdempotencyError ? 'idempotency_error' : (err.code ?? err.type);
  return new GatewayRequestError(err.message, 'stripe', code, status);
}

async function call<T>(fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    throw mapStripeError(err);
  }
}

export function createStripeGateway(opts: StripeGatewayOptions, client?: StripeClient): PaymentGateway {
  const stripe = client ?? new Stripe(opts.secretKey, stripeClientOptions(opts));
  return {
    name: 'stripe',

    createCustomer: (input, idempotencyKey) =>
      call(async () => {
        const c = await stripe.customers.create(
          { email: input.email ?? undefined, name: input.name, metadata: { orgId: input.orgId } },
          { idempotencyKey },
        );
        return { gatewayCustomerId: c.id };
      }),

    attachPaymentMethod: (input, idempotencyKey) =>
      call(async () => {
        const pm = await stripe.paymentMethods.attach(input.paymentMethod, { customer: input.gatewayCustomerId }, { idempotencyKey });
        // The default for off-session charges; its own key, derived, so a retry of the pair replays both.
        await stripe.customers.update(
          input.gatewayCustomerId,
          { invoice_settings: { default_payment_method: pm.id } },
          { idempotencyKey: `${idempotencyKey}:default` },
        );
        return { paymentMethodId: pm.id, brand: pm.card?.brand ?? null, last4: pm.card?.last4 ?? null };
      }),

    async charge(input, idempotencyKey) {
      try {
        const pi = await stripe.paymentIntents.create(
          {
            amount: input.amount,
            currency: input.currency.toLowerCase(),
            customer: input.gatewayCustomerId,
            payment_method: input.paymentMethodId,
            description: input.description,
            metadata: input.metadata,
            confirm: true,
            off_session: true,
            expand: ['latest_charge'],
          },
          { idempotencyKey },
        );
        return toPayment(pi);
      } catch (err) {
        // A decline is an outcome: Stripe answers 402 with the intent it created (the key replays it).
        if (err instanceof Stripe.errors.StripeCardError) {
          const failureCode = stripeFailureCode(err.code, err.decline_code);
          const pi = err.payment_intent;
          return {
            gatewayPaymentId: pi?.id ?? err.charge ?? '',
            status: failureCode === 'authentication_required' ? 'requires_action' : 'failed',
            amount: pi?.amount ?? input.amount,
            currency: (pi?.currency ?? input.currency).toUpperCase(),
            amountRefunded: 0,
            failureCode,
            failureMessage: err.message,
            metadata: { ...(pi?.metadata ?? input.metadata) },
            createdAt: pi ? new Date(pi.created * 1000) : new Date(),
          };
        }
        throw mapStripeError(err);
      }
    },

    refund: (input, idempotencyKey) =>
      call(async (): Promise<GatewayRefund> => {
        const r = await stripe.refunds.create(
          { payment_intent: input.gatewayPaymentId, ...(input.amount !== undefined ? { amount: input.amount } : {}), ...(input.metadata ? { metadata: input.metadata } : {}) },
          { idempotencyKey },
        );
        const status = r.status === 'succeeded' ? 'succeeded' : r.status === 'failed' || r.status === 'canceled' ? 'failed' : 'pending';
        const pi = typeof r.payment_intent === 'string' ? r.payment_intent : (r.payment_intent?.id ?? input.gatewayPaymentId);
        return { gatewayRefundId: r.id, gatewayPaymentId: pi, amount: r.amount, status };
      }),

    retrievePayment: (gatewayPaymentId) => call(async () => toPayment(await stripe.paymentIntents.retrieve(gatewayPaymentId, { expand: ['latest_charge'] }))),
  };
}
