import { Type } from '@sinclair/typebox';
import { DateTime, Uuid } from '../../platform/http/schemas.ts';
import { MAX_USAGE_BATCH } from './use-cases/usage.ts';

const StringEnum = <T extends readonly string[]>(values: T, description?: string) => Type.Unsafe<T[number]>({ type: 'string', enum: [...values], description });
const Nullable = <T extends ReturnType<typeof Type.String>>(t: T) => Type.Union([t, Type.Null()]);
const Key = Type.String({ pattern: '^[a-z][a-z0-9_-]{1,39}$', description: 'Stable lowercase key, e.g. "pro"' });
const MetricKey = Type.String({ pattern: '^[a-z][a-z0-9_.-]{1,63}$', description: 'e.g. "api.requests"' });
const Minor = (description = 'Integer minor units of the currency (cents, yen, fils)') => Type.Integer({ minimum: 0, maximum: Number.MAX_SAFE_INTEGER, description });
const Currency = Type.String({ pattern: '^[A-Z]{3}$', description: 'ISO 4217 code (USD, EUR, JPY, KWD, …)' });
const IntervalSchema = StringEnum(['month', 'year'] as const);
const Timing = StringEnum(['now', 'period_end'] as const);

export const OrgParams = Type.Object({ orgId: Uuid() });
export const PlanParams = Type.Object({ planId: Uuid() });

const EntitlementSpecSchema = Type.Object(
  {
    features: Type.Array(Type.String({ minLength: 1, maxLength: 64 }), { maxItems: 100, description: 'Boolean features, e.g. "sso"' }),
    limits: Type.Record(Type.String({ maxLength: 64 }), Type.Integer({ minimum: 0 }), { description: 'Numeric limits, e.g. { "projects": 10, "members": 5 }; absent = unlimited' }),
    quotas: Type.Record(Type.String({ maxLength: 64 }), Type.Number({ minimum: 0 }), { description: 'Metered quotas per billing period by metric, e.g. { "api.requests": 100000 }' }),

    enforcement: Type.Optional(
      Type.Record(Type.String({ maxLength: 64 }), Type.Union([Type.Literal('soft'), Type.Literal('hard')]), {
        description: 'Per quota metric: `hard` refuses the guarded action with 402 BILLING.QUOTA_EXCEEDED once the period\'s quota is used up; `soft` (default) only notifies (80 %/100 % events, e-mail)',
      }),
    ),
  },
  { additionalProperties: false },
);
const EntitlementSpecInput = Type.Partial(EntitlementSpecSchema, { additionalProperties: false });

export const ProductSchema = Type.Object({ id: Uuid(), key: Type.String(), name: Type.String(), description: Type.String(), createdAt: DateTime() }, { additionalProperties: false });
export const CreateProductBody = Type.Object(
  { key: Key, name: Type.String({ minLength: 1, maxLength: 100 }), description: Type.Optional(Type.String({ maxLength: 1000 })) },
  { additionalProperties: false, examples: [{ key: 'plinth', name: 'Plinth', description: 'The Plinth workspace' }] },
);

const TierSchema = Type.Object(
  { upTo: Type.Union([Type.Integer({ minimum: 1 }), Type.Null()], { description: 'Inclusive upper bound; null for the last tier' }), unitAmount: Minor(), flatAmount: Minor() },
  { additionalProperties: false },
);

export const PriceSchema = Type.Object(
  {
    id: Uuid(),
    planId: Uuid(),
    version: Type.Integer({ description: 'Immutable version number per (plan, currency, interval)' }),
    currency: Type.String(),
    interval: IntervalSchema,
    usageType: StringEnum(['licensed', 'metered'] as const),
    model: StringEnum(['flat', 'per_unit', 'tiered', 'volume', 'package'] as const),
    perSeat: Type.Boolean(),
    flatAmount: Type.Integer(),
    unitAmount: Type.Integer(),
    tiers: Type.Array(TierSchema),
    packageSize: Type.Integer(),
    metric: Nullable(Type.String()),
    trialDays: Type.Integer(),
    entitlements: EntitlementSpecSchema,
    createdAt: DateTime(),
  },
  { additionalProperties: false },
);

export const CreatePriceBody = Type.Object(
  {
    currency: Currency,
    interval: IntervalSchema,
    model: StringEnum(['flat', 'per_unit', 'tiered', 'volume', 'package'] as const),
    usageType: Type.Optional(StringEnum(['licensed', 'metered'] as const)),
    perSeat: Type.Optional(Type.Boolean({ description: 'Quantity follows the org member count' })),
    flatAmount: Type.Optional(Minor()),
    unitAmount: Type.Optional(Minor()),
    tiers: Type.Optional(Type.Array(TierSchema, { maxItems: 20 })),
    packageSize: Type.Optional(Type.Integer({ minimum: 1, maximum: 1_000_000_000 })),
    metric: Type.Optional(MetricKey),
    trialDays: Type.Optional(Type.Integer({ minimum: 0, maximum: 730 })),
    entitlements: Type.Optional(EntitlementSpecInput),
  },
  {
    additionalProperties: false,
    examples: [
      { currency: 'USD', interval: 'month', model: 'flat', flatAmount: 2900, trialDays: 14, entitlements: { features: ['sso'], limits: { projects: 50, members: 25 }, quotas: { 'api.requests': 100000 } } },
      { currency: 'EUR', interval: 'month', model: 'per_unit', perSeat: true, unitAmount: 800 },
    ],
  },
);

export const PlanSchema = Type.Object(
  {
    id: Uuid(),
    productId: Uuid(),
    key: Type.String(),
    name: Type.String(),
    description: Type.String(),
    rank: Type.Integer({ description: 'Higher = bigger plan: moving up is an upgrade' }),
    upgradeTiming: Timing,
    downgradeTiming: Timing,
    public: Type.Boolean(),
    isDefault: Type.Boolean({ description: 'Entitlements of orgs without a subscription' }),
    createdAt: DateTime(),
    updatedAt: DateTime(),
  },
  { additionalProperties: false },
);
export const CatalogPlanSchema = Type.Object({ ...PlanSchema.properties, prices: Type.Array(PriceSchema) }, { additionalProperties: false });

export const CreatePlanBody = Type.Object(
  {
    productId: Uuid(),
    key: Key,
    name: Type.String({ minLength: 1, maxLength: 100 }),
    description: Type.Optional(Type.String({ maxLength: 1000 })),
    rank: Type.Optional(Type.Integer({ minimum: -1000, maximum: 1000 })),
    upgradeTiming: Type.Optional(Timing),
    downgradeTiming: Type.Optional(Timing),
    public: Type.Optional(Type.Boolean()),
    isDefault: Type.Optional(Type.Boolean()),
  },
  { additionalProperties: false, examples: [{ productId: '0190a0b0-0000-7000-8000-000000000001', key: 'pro', name: 'Pro', rank: 20, upgradeTiming: 'now', downgradeTiming: 'period_end' }] },
);
export const UpdatePlanBody = Type.Partial(Type.Omit(CreatePlanBody, ['productId', 'key']), { additionalProperties: false, minProperties: 1, examples: [{ rank: 25, downgradeTiming: 'now' }] });

export const MeterSchema = Type.Object(
  {
    key: MetricKey,
    name: Type.String({ minLength: 1, maxLength: 100 }),
    aggregation: StringEnum(['count', 'sum', 'max', 'unique_count', 'latest', 'time_weighted_sum'] as const, 'time_weighted_sum: each event sets a level (seats, GB) held until the next; usage is the level integrated over time, in value-hours'),
    property: Type.Union([Type.String({ minLength: 1, maxLength: 100 }), Type.Null()], { description: 'unique_count: the property whose distinct values count' }),
  },
  { additionalProperties: false, examples: [{ key: 'active.users', name: 'Active users', aggregation: 'unique_count', property: 'userId' }] },
);

export const CustomerSchema = Type.Object(
  {
    id: Uuid(),
    email: Nullable(Type.String()),
    name: Type.String(),
    address: Type.Record(Type.String(), Type.String()),
    currency: Type.String(),
    taxId: Nullable(Type.String()),
    version: Type.Integer(),
    createdAt: DateTime(),
    updatedAt: DateTime(),
  },
  { additionalProperties: false },
);
export const UpdateCustomerBody = Type.Object(
  {
    email: Type.Optional(Type.String({ format: 'email', maxLength: 254 })),
    name: Type.Optional(Type.String({ maxLength: 200 })),
    address: Type.Optional(Type.Record(Type.String({ maxLength: 32 }), Type.String({ maxLength: 200 }), { maxProperties: 10 })),
    currency: Type.Optional(Currency),
    taxId: Type.Optional(Type.String({ maxLength: 64 })),
  },
  { additionalProperties: false, minProperties: 1, examples: [{ email: 'billing@example.com', name: 'Example Ltd', address: { line1: '1 Main St', city: 'Berlin', country: 'DE' }, currency: 'EUR', taxId: 'DE123456789' }] },
);

export const SubscriptionSchema = Type.Object(
  {
    id: Uuid(),
    planId: Uuid(),
    priceId: Uuid(),
    status: StringEnum(['trialing', 'active', 'past_due', 'paused', 'canceled'] as const),
    quantity: Type.Integer(),
    currency: Type.String(),
    interval: IntervalSchema,
    anchorAt: DateTime(),
    currentPeriodStart: DateTime(),
    currentPeriodEnd: DateTime(),
    trialEnd: Type.Union([DateTime(), Type.Null()]),
    cancelAtPeriodEnd: Type.Boolean(),
    canceledAt: Type.Union([DateTime(), Type.Null()]),
    pausedAt: Type.Union([DateTime(), Type.Null()]),
    pastDueSince: Type.Union([DateTime(), Type.Null()]),
    pendingPlanId: Nullable(Uuid()),
    pendingPriceId: Nullable(Uuid()),
    version: Type.Integer(),
    createdAt: DateTime(),
    updatedAt: DateTime(),
  },
  { additionalProperties: false },
);

export const SubscribeBody = Type.Object(
  {
    planId: Uuid(),
    interval: Type.Optional(IntervalSchema),
    currency: Type.Optional(Currency),
    trial: Type.Optional(Type.Boolean({ description: "Start with the price's trial (default true)" })),
    quantity: Type.Optional(Type.Integer({ minimum: 1, maximum: 1_000_000 })),
  },
  { additionalProperties: false, examples: [{ planId: '0190a0b0-0000-7000-8000-000000000002', interval: 'month', trial: true }] },
);
export const ChangePlanBody = Type.Object({ planId: Uuid(), interval: Type.Optional(IntervalSchema) }, { additionalProperties: false, examples: [{ planId: '0190a0b0-0000-7000-8000-000000000003' }] });
export const CancelBody = Type.Object(
  { atPeriodEnd: Type.Boolean({ description: 'true: at the end of the current period; false: now, crediting the unused time' }) },
  { additionalProperties: false, examples: [{ atPeriodEnd: true }] },
);

const LineSchema = Type.Object(
  { kind: StringEnum(['subscription', 'proration_charge', 'proration_credit'] as const), amount: Type.Integer({ description: 'Minor units; negative = credit' }), description: Type.String(), periodStart: DateTime(), periodEnd: DateTime() },
  { additionalProperties: false },
);
export const PreviewSchema = Type.Object(
  {
    direction: StringEnum(['upgrade', 'downgrade'] as const),
    timing: Timing,
    effectiveAt: DateTime(),
    currency: Type.String(),
    lines: Type.Array(LineSchema),
    total: Type.Integer({ description: 'Sum of the lines, minor units: positive is owed now, negative a credit' }),
    fromPriceId: Uuid(),
    toPriceId: Uuid(),
  },
  { additionalProperties: false },
);
export const ChangeResultSchema = Type.Object({ subscription: SubscriptionSchema, preview: PreviewSchema }, { additionalProperties: false });

export const ChargeSchema = Type.Object(
  {
    id: Uuid(),
    subscriptionId: Uuid(),
    kind: StringEnum(['subscription', 'proration_charge', 'proration_credit'] as const),
    amount: Type.Integer(),
    currency: Type.String(),
    quantity: Type.Integer(),
    priceId: Uuid(),
    description: Type.String(),
    periodStart: DateTime(),
    periodEnd: DateTime(),
    invoiceId: Nullable(Uuid()),
    createdAt: DateTime(),
  },
  { additionalProperties: false },
);
export const ChargeQuery = Type.Object({ after: Type.Optional(Uuid('Charges after this id (ascending)')), limit: Type.Optional(Type.Integer({ minimum: 1, maximum: 100, default: 50 })) }, { additionalProperties: false });

export const EntitlementsSchema = Type.Object(
  {
    version: Type.Integer(),
    plan: Type.Union([Type.Object({ id: Uuid(), key: Type.String(), name: Type.String(), rank: Type.Integer() }, { additionalProperties: false }), Type.Null()]),
    status: Nullable(Type.String()),
    currency: Type.String(),
    ...EntitlementSpecSchema.properties,
  },
  { additionalProperties: false },
);

export const TestClockSchema = Type.Object({ frozenTime: DateTime() }, { additionalProperties: false });
export const AdvanceClockBody = Type.Object(
  { frozenTime: Type.String({ format: 'date-time', description: 'Creates the clock here (not before now), or moves it forward to here' }) },
  { additionalProperties: false, examples: [{ frozenTime: '2027-01-15T00:00:00Z' }] },
);
export const AdvanceClockResult = Type.Object({ clock: TestClockSchema, subscription: Type.Union([SubscriptionSchema, Type.Null()]) }, { additionalProperties: false });

const UsageEventSchema = Type.Object(
  {
    key: Type.String({ minLength: 1, maxLength: 200, description: 'Idempotency key of the event, unique per org' }),
    metric: MetricKey,
    timestamp: Type.Optional(Type.String({ format: 'date-time' })),
    value: Type.Optional(Type.Number({ minimum: -1e15, maximum: 1e15 })),
    properties: Type.Optional(Type.Record(Type.String({ maxLength: 64 }), Type.Union([Type.String({ maxLength: 256 }), Type.Number(), Type.Boolean(), Type.Null()]), { maxProperties: 20 })),
  },
  { additionalProperties: false },
);
export const UsageBody = Type.Union(
  [UsageEventSchema, Type.Object({ events: Type.Array(UsageEventSchema, { minItems: 1, maxItems: MAX_USAGE_BATCH }) }, { additionalProperties: false })],
  {
    examples: [
      { key: 'req-0190a0b0', metric: 'api.requests', timestamp: '2026-12-01T10:00:00Z', value: 1, properties: { route: '/v1/me' } },
      { events: [{ key: 'evt-1', metric: 'storage.gb', value: 12.5 }, { key: 'evt-2', metric: 'active.users', properties: { userId: 'u1' } }] },
    ],
  },
);
export const IngestResultSchema = Type.Object(
  {
    accepted: Type.Integer(),
    duplicates: Type.Integer({ description: 'Keys already recorded (retries): counted once' }),
    rejected: Type.Array(Type.Object({ index: Type.Integer(), key: Type.String(), code: Type.String(), detail: Type.String() }, { additionalProperties: false })),
  },
  { additionalProperties: false },
);
export const UsageQuery = Type.Object(
  {
    metric: MetricKey,
    from: Type.Optional(Type.String({ format: 'date-time', description: 'Inclusive, rounded down to the hour; default: start of the current UTC month' })),
    to: Type.Optional(Type.String({ format: 'date-time', description: 'Exclusive; default: one month after from' })),
    groupBy: Type.Optional(StringEnum(['hour', 'day', 'month', 'total'] as const)),
    aggregation: Type.Optional(StringEnum(['count', 'sum', 'max', 'unique_count', 'latest', 'time_weighted_sum'] as const, "Default: the meter's, else sum")),
  },
  { additionalProperties: false },
);
export const UsageResultSchema = Type.Object(
  {
    metric: Type.String(),
    aggregation: Type.String(),
    data: Type.Array(Type.Object({ start: DateTime(), value: Type.Number() }, { additionalProperties: false })),
  },
  { additionalProperties: false },
);
