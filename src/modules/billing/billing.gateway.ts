/**
 * The payment gateway port (issue #14): everything billing asks of a payment provider, and nothing of how the
 * provider is reached. Adapters: `sandbox` (embedded default, no network, outcomes chosen by test tokens) and
 * `stripe` (the official SDK). Callers wrap every call in the platform's `payment` DestinationPolicy
 * (timeout, breaker, bulkhead) and pass an idempotency key derived from the invoice/attempt, so a retry —
 * including one after a crash between the call and the local commit — never charges twice.
 *
 * Business outcomes (a declined card) are results, not exceptions: `charge` returns `status: 'failed'` with a
 * failure code. Exceptions mean "we do not know what happened" (timeout, 5xx, connection) and are
 * `GatewayUnavailableError` (retry with the same key) or `GatewayRequestError` (our request was wrong; do not retry).
 */

export type GatewayName = 'sandbox' | 'stripe';

export type GatewayPaymentStatus = 'succeeded' | 'processing' | 'requires_action' | 'failed' | 'canceled';

/** Stripe's decline codes where they exist, so both adapters report the same words. */
export type GatewayFailureCode =
  | 'card_declined'
  | 'insufficient_funds'
  | 'authentication_required'
  | 'processing_error'
  | 'expired_card'
  | 'other';

export interface GatewayPayment {
  gatewayPaymentId: string;
  status: GatewayPaymentStatus;
  /** Minor units, as charged. */
  amount: number;
  currency: string;
  amountRefunded: number;
  failureCode?: GatewayFailureCode;
  failureMessage?: string;
  /** Echoed back: billing puts `orgId`, `invoiceId` and `attemptId` here, so reconciliation can match. */
  metadata: Record<string, string>;
  createdAt: Date;
}

export interface GatewayRefund {
  gatewayRefundId: string;
  gatewayPaymentId: string;
  amount: number;
  status: 'succeeded' | 'pending' | 'failed';
}

export interface PaymentGateway {
  readonly name: GatewayName;
  createCustomer(input: { orgId: string; email: string | null; name: string }, idempotencyKey: string): Promise<{ gatewayCustomerId: string }>;
  /** `paymentMethod` is the provider's token (sandbox: a test card number or `pm_…` token). */
  attachPaymentMethod(
    input: { gatewayCustomerId: string; paymentMethod: string },
    idempotencyKey: string,
  ): Promise<{ paymentMethodId: string; brand: string | null; last4: string | null }>;
  /** An off-session charge, confirmed at once. */
  charge(
    input: {
      gatewayCustomerId: string;
      paymentMethodId: string;
      amount: number;
      currency: string;
      description: string;
      metadata: Record<string, string>;
    },
    idempotencyKey: string,
  ): Promise<GatewayPayment>;
  refund(input: { gatewayPaymentId: string; amount?: number; metadata?: Record<string, string> }, idempotencyKey: string): Promise<GatewayRefund>;
  retrievePayment(gatewayPaymentId: string): Promise<GatewayPayment>;
}

/** The provider could not be reached or did not answer in time: the outcome is unknown; retry with the same key. */
export class GatewayUnavailableError extends Error {
  override readonly name = 'GatewayUnavailableError';
  constructor(message: string, readonly gateway: GatewayName, options?: { cause?: unknown }) {
    super(message, options);
  }
}

/** The provider refused the request itself (bad parameters, unknown object, idempotency-key reuse): never retried. */
export class GatewayRequestError extends Error {
  override readonly name = 'GatewayRequestError';
  constructor(message: string, readonly gateway: GatewayName, readonly code: string, readonly status?: number) {
    super(message);
  }
}
