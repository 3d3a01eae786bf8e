import type { PaymentsConfig } from '../../platform/config.ts';
import type { PaymentGateway } from './billing.gateway.ts';
import { createSandboxGateway } from './billing.gateway-sandbox.ts';

/**
 * The configured payment gateway (PAYMENT_GATEWAY). The seam for the `stripe` adapter
 * (billing.gateway-stripe.ts): add its case here; nothing else in billing names an adapter.
 */
export function createGateway(config: Pick<PaymentsConfig, 'gateway' | 'sandboxFile'>): PaymentGateway {
  switch (config.gateway) {
    case 'sandbox':
      return createSandboxGateway({ file: config.sandboxFile });
    case 'stripe':
      throw new Error('PAYMENT_GATEWAY=stripe: the stripe adapter (billing.gateway-stripe.ts) is not wired in this build');
  }
}
