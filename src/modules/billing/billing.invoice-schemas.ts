import { Type } from '@sinclair/typebox';
import { DateTime, Uuid } from '../../platform/http/schemas.ts';

const StringEnum = <T extends readonly string[]>(values: T, description?: string) => Type.Unsafe<T[number]>({ type: 'string', enum: [...values], description });
const Nullable = <T extends ReturnType<typeof Type.String> | ReturnType<typeof Type.Integer> | ReturnType<typeof DateTime>>(t: T) => Type.Union([t, Type.Null()]);
const Minor = (description = 'Integer minor units of the currency') => Type.Integer({ description });
const Free = Type.Record(Type.String(), Type.Unknown());

export const InvoiceParams = Type.Object({ orgId: Uuid(), invoiceId: Uuid() });

const UsageComputationSchema = Type.Object({
  metric: Type.String(),
  aggregation: Type.String(),
  property: Nullable(Type.String()),
  from: DateTime(),
  to: DateTime(),
  cutoff: DateTime(),
  previousCutoff: Nullable(DateTime()),
  lowerBound: DateTime(),
  value: Type.String({ description: 'The aggregate (decimal text)' }),
  events: Type.Integer(),
  hash: Type.String({ description: 'SHA-256 over every usage event counted (key, time, value, property)' }),
});

export const InvoiceLineSchema = Type.Object({
  id: Uuid(),
  position: Type.Integer(),
  kind: StringEnum(['subscription', 'proration_charge', 'proration_credit', 'usage'] as const),
  description: Type.String(),
  chargeId: Nullable(Uuid()),
  subscriptionId: Nullable(Uuid()),
  priceId: Nullable(Uuid()),
  priceVersion: Nullable(Type.Integer()),
  quantity: Type.Integer(),
  unitAmount: Nullable(Type.Integer()),
  amount: Minor(),
  discountAmount: Minor(),
  taxAmount: Minor(),
  periodStart: DateTime(),
  periodEnd: DateTime(),
  computation: Type.Object(
    {
      source: StringEnum(['charge', 'usage'] as const),
      model: Type.String(),
      flatAmount: Type.Integer(),
      unitAmount: Type.Integer(),
      tiers: Type.Array(Free),
      packageSize: Type.Integer(),
      quantity: Type.Integer(),
      amount: Type.Integer(),
      usage: Type.Optional(UsageComputationSchema),
    },
    { description: 'How the line was computed: enough to recompute it identically' },
  ),
});

export const CreditNoteSchema = Type.Object({
  id: Uuid(),
  invoiceId: Uuid(),
  amount: Minor(),
  outstandingAmount: Minor('Part that reduced the amount due'),
  balanceAmount: Minor('Part credited to the customer balance'),
  refundAmount: Minor('Part refunded through the payment gateway'),
  gatewayRefundId: Nullable(Type.String()),
  reason: StringEnum(['duplicate', 'fraudulent', 'order_change', 'product_unsatisfactory', 'other'] as const),
  memo: Type.String(),
  createdAt: DateTime(),
});

const DiscountSnapshotSchema = Type.Object({
  customerDiscountId: Uuid(),
  couponId: Uuid(),
  key: Type.String(),
  name: Type.String(),
  percentOffPpm: Nullable(Type.Integer()),
  amountOff: Nullable(Type.Integer()),
  currency: Nullable(Type.String()),
  duration: Type.String(),
  promotionCode: Nullable(Type.String()),
});

const TaxSnapshotSchema = Type.Object({
  taxRateId: Uuid(),
  name: Type.String(),
  country: Type.String(),
  region: Type.String(),
  percentagePpm: Type.Integer({ description: 'Parts per million (19 % = 190000)' }),
  inclusive: Type.Boolean(),
});

const invoiceFields = {
  id: Uuid(),
  number: Nullable(Type.String({ description: 'Gap-free per organization, assigned at finalization' })),
  status: StringEnum(['draft', 'finalized', 'paid', 'void', 'uncollectible'] as const),
  reason: StringEnum(['subscription_create', 'subscription_cycle', 'subscription_update', 'manual'] as const),
  subscriptionId: Nullable(Uuid()),
  currency: Type.String(),
  periodStart: DateTime(),
  periodEnd: DateTime(),
  customer: Free,
  discount: Type.Union([DiscountSnapshotSchema, Type.Null()]),
  tax: Type.Union([TaxSnapshotSchema, Type.Null()]),
  subtotal: Minor(),
  discountTotal: Minor(),
  taxTotal: Minor(),
  total: Minor(),
  creditApplied: Minor('Paid from the customer credit balance'),
  credited: Minor('Sum of credit notes'),
  amountDue: Minor(),
  amountPaid: Minor(),
  attemptCount: Type.Integer({ description: 'Failed collection attempts so far' }),
  nextPaymentAttemptAt: Nullable(DateTime()),
  createdAt: DateTime(),
  finalizedAt: Nullable(DateTime()),
  paidAt: Nullable(DateTime()),
  voidedAt: Nullable(DateTime()),
  uncollectibleAt: Nullable(DateTime()),
};

export const InvoiceSummarySchema = Type.Object(invoiceFields);
export const InvoiceSchema = Type.Object({
  ...invoiceFields,
  amountRemaining: Minor(),
  lines: Type.Array(InvoiceLineSchema),
  creditNotes: Type.Array(CreditNoteSchema),
});

export const InvoiceListQuery = Type.Object(
  {
    status: Type.Optional(StringEnum(['draft', 'finalized', 'paid', 'void', 'uncollectible'] as const)),
    before: Type.Optional(Uuid()),
    limit: Type.Optional(Type.Integer({ minimum: 1, maximum: 100, default: 20 })),
  },
  { additionalProperties: false },
);

export const CreateInvoiceBody = Type.Object(
  { finalize: Type.Optional(Type.Boolean({ description: 'Finalize at once (default true); false leaves a draft' })) },
  { additionalProperties: false, examples: [{ finalize: true }] },
);

export const CreditNoteBody = Type.Object(
  {
    amount: Type.Integer({ minimum: 1, maximum: Number.MAX_SAFE_INTEGER }),
    reason: StringEnum(['duplicate', 'fraudulent', 'order_change', 'product_unsatisfactory', 'other'] as const),
    memo: Type.Optional(Type.String({ maxLength: 500 })),
    refund: Type.Optional(Type.Boolean({ description: 'A paid invoice: refund through the gateway instead of crediting the balance' })),
  },
  { additionalProperties: false, examples: [{ amount: 500, reason: 'product_unsatisfactory', memo: 'Outage on the 3rd' }] },
);

export const PdfLinkSchema = Type.Object({ url: Type.String(), expiresAt: DateTime() });

export const PaymentMethodSchema = Type.Object({
  gateway: Type.String(),
  gatewayCustomerId: Type.String(),
  paymentMethodId: Type.String(),
  brand: Nullable(Type.String()),
  last4: Nullable(Type.String()),
  updatedAt: DateTime(),
});

export const PaymentMethodBody = Type.Object(
  { token: Type.String({ minLength: 3, maxLength: 200, description: 'A gateway payment-method token (sandbox: a test card number such as 4242424242424242, or tok_visa)' }) },
  { additionalProperties: false, examples: [{ token: '4242424242424242' }] },
);

export const PaymentSchema = Type.Object({
  id: Uuid(),
  invoiceId: Uuid(),
  attemptNo: Type.Integer(),
  idempotencyKey: Type.String(),
  gateway: Type.String(),
  gatewayPaymentId: Nullable(Type.String()),
  status: StringEnum(['succeeded', 'processing', 'requires_action', 'failed', 'canceled'] as const),
  failureCode: Nullable(Type.String()),
  failureMessage: Nullable(Type.String()),
  amount: Minor(),
  currency: Type.String(),
  createdAt: DateTime(),
  updatedAt: DateTime(),
});

export const PaymentListQuery = Type.Object(
  { invoiceId: Type.Optional(Uuid()), before: Type.Optional(Uuid()), limit: Type.Optional(Type.Integer({ minimum: 1, maximum: 100, default: 20 })) },
  { additionalProperties: false },
);

export const BalanceSchema = Type.Object({ balance: Minor('Credit the customer has (applied to its next invoices)'), currency: Type.String() });

const CouponFields = {
  id: Uuid(),
  key: Type.String(),
  name: Type.String(),
  percentOffPpm: Nullable(Type.Integer()),
  amountOff: Nullable(Type.Integer()),
  currency: Nullable(Type.String()),
  duration: StringEnum(['once', 'repeating', 'forever'] as const),
  durationMonths: Nullable(Type.Integer()),
  createdAt: DateTime(),
};
export const CouponSchema = Type.Object(CouponFields);

export const DiscountSchema = Type.Object({
  id: Uuid(),
  couponId: Uuid(),
  promotionCode: Nullable(Type.String()),
  coupon: CouponSchema,
  startedAt: DateTime(),
  endsAt: Nullable(DateTime()),
  timesApplied: Type.Integer(),
  active: Type.Boolean(),
});

export const RedeemBody = Type.Object(
  { promotionCode: Type.String({ pattern: '^[A-Za-z0-9][A-Za-z0-9_-]{2,39}$' }) },
  { additionalProperties: false, examples: [{ promotionCode: 'LAUNCH25' }] },
);

export const CreateCouponBody = Type.Object(
  {
    key: Type.String({ pattern: '^[a-z0-9][a-z0-9_-]{1,39}$' }),
    name: Type.String({ minLength: 1, maxLength: 100 }),
    percentOff: Type.Optional(Type.Number({ exclusiveMinimum: 0, maximum: 100, description: 'Percent off (up to 4 decimals)' })),
    amountOff: Type.Optional(Type.Integer({ minimum: 1, maximum: Number.MAX_SAFE_INTEGER })),
    currency: Type.Optional(Type.String({ pattern: '^[A-Z]{3}$' })),
    duration: StringEnum(['once', 'repeating', 'forever'] as const),
    durationMonths: Type.Optional(Type.Integer({ minimum: 1, maximum: 120 })),
  },
  { additionalProperties: false, examples: [{ key: 'launch', name: 'Launch 25 %', percentOff: 25, duration: 'repeating', durationMonths: 3 }] },
);

export const PromotionCodeSchema = Type.Object({
  id: Uuid(),
  code: Type.String(),
  couponId: Uuid(),
  active: Type.Boolean(),
  maxRedemptions: Nullable(Type.Integer()),
  timesRedeemed: Type.Integer(),
  expiresAt: Nullable(DateTime()),
  createdAt: DateTime(),
});

export const CreatePromotionCodeBody = Type.Object(
  {
    code: Type.String({ pattern: '^[A-Za-z0-9][A-Za-z0-9_-]{2,39}$' }),
    couponId: Uuid(),
    maxRedemptions: Type.Optional(Type.Integer({ minimum: 1, maximum: 1_000_000_000 })),
    expiresAt: Type.Optional(Type.String({ format: 'date-time' })),
  },
  { additionalProperties: false, examples: [{ code: 'LAUNCH25', couponId: '01890a5d-ac96-774b-bcce-b302099a8057', maxRedemptions: 100 }] },
);

export const TaxRateSchema = Type.Object({
  id: Uuid(),
  country: Type.String(),
  region: Type.String(),
  name: Type.String(),
  percentagePpm: Type.Integer(),
  inclusive: Type.Boolean(),
  active: Type.Boolean(),
  createdAt: DateTime(),
});

export const CreateTaxRateBody = Type.Object(
  {
    country: Type.String({ pattern: '^[A-Z]{2}$', description: 'ISO 3166-1 alpha-2, matched against the customer address `country`' }),
    region: Type.Optional(Type.String({ pattern: '^[A-Za-z0-9-]{1,10}$', description: 'Matched against the address `state` (or `region`)' })),
    name: Type.String({ minLength: 1, maxLength: 100 }),
    percentage: Type.Number({ minimum: 0, maximum: 100 }),
    inclusive: Type.Optional(Type.Boolean({ description: 'Prices include this tax (default false: added on top)' })),
  },
  { additionalProperties: false, examples: [{ country: 'DE', name: 'USt', percentage: 19, inclusive: false }] },
);
