import type { PaymentGatewaysConfig, PaymentsConfig } from '../../platform/config.ts';
import type { PaymentGateway } from './billing.gateway.ts';
import { createSandboxGateway } from './billing.gateway-sandbox.ts';
import { createStripeGateway } from './billing.gateway-stripe.ts';

type StripeKeys = Pick<PaymentGatewaysConfig, 'stripeSecretKey' | 'stripeApiBase' | 'stripeTimeoutMs'>;

/** The Stripe adapter when its key is set; undefined otherwise. */
export function stripeGateway(keys: StripeKeys): PaymentGateway | undefined {
  if (!keys.stripeSecretKey) return undefined;
  return createStripeGateway({ secretKey: keys.stripeSecretKey, apiBase: keys.stripeApiBase, timeoutMs: keys.stripeTimeoutMs });
}

/**
 * The configured payment gateway (PAYMENT_GATEWAY): the embedded sandbox, or Stripe through its SDK
 * (billing.gateway-stripe.ts). Nothing else in billing names an adapter.
 */
export function createGateway(config: Pick<PaymentsConfig, 'gateway' | 'sandboxFile'>, keys: StripeKeys): PaymentGateway {
  switch (config.gateway) {
    case 'sandbox':
      return createSandboxGateway({ file: config.sandboxFile });
    case 'stripe': {
      const stripe = stripeGateway(keys);
      if (!stripe) throw new Error('PAYMENT_GATEWAY=stripe needs STRIPE_SECRET_KEY');
      return stripe;
    }
  }
}
