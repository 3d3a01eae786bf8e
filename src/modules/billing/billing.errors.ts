import { AppError } from '../../platform/http/errors.ts';

/** Error codes of the billing module. Another tenant's ids answer the same 404 as unknown ones. */
export const productNotFound = () => new AppError('BILLING.PRODUCT_NOT_FOUND', 404, 'Product not found');
export const planNotFound = () => new AppError('BILLING.PLAN_NOT_FOUND', 404, 'Plan not found');
export const priceNotFound = (detail = 'No price of this plan matches') => new AppError('BILLING.PRICE_NOT_FOUND', 404, detail);
export const keyTaken = (what: string, key: string) => new AppError('BILLING.KEY_TAKEN', 409, `A ${what} with key ${key} already exists`, { key });
export const invalidPrice = (detail: string) => new AppError('BILLING.INVALID_PRICE', 422, detail);
export const unknownCurrency = (currency: string) =>
  new AppError('BILLING.UNKNOWN_CURRENCY', 422, `${currency} is not a billable ISO 4217 currency`, { currency });
export const noCustomer = () =>
  new AppError('BILLING.NO_CUSTOMER', 404, 'The organization has no billing details yet; set them with PATCH, or subscribe');
export const noSubscription = () => new AppError('BILLING.NO_SUBSCRIPTION', 404, 'The organization has no subscription');
export const alreadySubscribed = () =>
  new AppError('BILLING.ALREADY_SUBSCRIBED', 409, 'The organization already has a live subscription; change its plan instead');
export const invalidTransition = (from: string, action: string) =>
  new AppError('BILLING.INVALID_TRANSITION', 409, `A ${from} subscription cannot be ${action}`, { status: from, action });
export const samePlan = () => new AppError('BILLING.SAME_PRICE', 409, 'The subscription is already on this price');
export const currencyMismatch = (have: string, want: string) =>
  new AppError('BILLING.CURRENCY_MISMATCH', 422, `The subscription is billed in ${have}; the price is in ${want}`, { currency: have });
export const testClockDisabled = () =>
  new AppError('BILLING.TEST_CLOCK_DISABLED', 403, 'Test clocks exist only outside production (NODE_ENV=production)');
export const testClockBackwards = () => new AppError('BILLING.TEST_CLOCK_BACKWARDS', 422, 'A test clock only moves forward');
export const noTestClock = () => new AppError('BILLING.NO_TEST_CLOCK', 404, 'The organization has no test clock');
export const usageBatchTooLarge = (max: number) => new AppError('BILLING.USAGE_BATCH_TOO_LARGE', 413, `A batch holds at most ${max} events`, { max });

/** The 402 every exceeded limit answers: which limit, how much is used, and the plan that lifts it. */
export function limitExceeded(input: { limit: string; allowed: number; usage: number; plan: string | null; upgradeTo: { key: string; name: string; limit: number | null } | null }) {
  const lift = input.upgradeTo ? ` The ${input.upgradeTo.name} plan allows ${input.upgradeTo.limit ?? 'unlimited'}.` : '';
  return new AppError(
    'BILLING.LIMIT_EXCEEDED',
    402,
    `The ${input.plan ?? 'current'} plan allows ${input.allowed} ${input.limit}; ${input.usage} in use.${lift}`,
    { limit: input.limit, allowed: input.allowed, usage: input.usage, plan: input.plan, upgradeTo: input.upgradeTo },
  );
}

/** Payment webhooks (issue #14): the gateway's signature is the authentication; nothing is stored without it. */
export const webhookBadSignature = (detail: string) => new AppError('BILLING.WEBHOOK_BAD_SIGNATURE', 400, `The webhook could not be verified: ${detail}`);
export const gatewayNotConfigured = (gateway: string) =>
  new AppError('BILLING.GATEWAY_NOT_CONFIGURED', 404, `No webhook secret is configured for the ${gateway} gateway`, { gateway });

/** The 402 a guarded action answers once a hard quota is used up for the period. */
export function quotaExceeded(input: { metric: string; quota: number; usage: number; plan: string | null; periodEnd: string | null }) {
  return new AppError(
    'BILLING.QUOTA_EXCEEDED',
    402,
    `The ${input.plan ?? 'current'} plan includes ${input.quota} ${input.metric} per period; ${input.usage} used${input.periodEnd ? ` (the period ends ${input.periodEnd})` : ''}.`,
    { metric: input.metric, quota: input.quota, usage: input.usage, plan: input.plan, periodEnd: input.periodEnd },
  );
}

// ---- invoices and payments (issue #14)
export const invoiceNotFound = () => new AppError('BILLING.INVOICE_NOT_FOUND', 404, 'Invoice not found');
export const nothingToInvoice = () => new AppError('BILLING.NOTHING_TO_INVOICE', 409, 'Nothing is owed that is not invoiced yet');
export const invalidInvoiceState = (status: string, action: string) =>
  new AppError('BILLING.INVALID_INVOICE_STATE', 409, `A ${status} invoice cannot be ${action}`, { status, action });
export const creditTooLarge = (max: number) => new AppError('BILLING.CREDIT_TOO_LARGE', 422, `At most ${max} minor units of this invoice can still be credited`, { max });
export const pdfNotReady = () => new AppError('BILLING.PDF_NOT_READY', 409, 'The invoice PDF is being rendered; try again in a moment');
export const noPaymentMethod = () => new AppError('BILLING.NO_PAYMENT_METHOD', 404, 'The organization has no payment method');
export const paymentMethodRefused = (detail: string, code: string) => new AppError('BILLING.PAYMENT_METHOD_REFUSED', 422, detail, { gatewayCode: code });
export const gatewayUnavailable = () => new AppError('BILLING.GATEWAY_UNAVAILABLE', 503, 'The payment provider is not reachable; try again shortly');
export const couponNotFound = () => new AppError('BILLING.COUPON_NOT_FOUND', 404, 'Coupon not found');
export const invalidCoupon = (detail: string) => new AppError('BILLING.INVALID_COUPON', 422, detail);
export const promotionCodeInvalid = () =>
  new AppError('BILLING.PROMOTION_CODE_INVALID', 422, 'This promotion code does not exist, has expired or has been used up');
