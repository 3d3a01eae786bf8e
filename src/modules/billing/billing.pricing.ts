import { assertMinor } from './billing.money.ts';

/**
 * How a price version turns a quantity (seats, units, or a period's metered usage) into minor units.
 * - flat: `flatAmount` whatever the quantity;
 * - per_unit: `unitAmount × quantity` (per-seat plans: quantity = member count);
 * - tiered (graduated): each tier prices the units that fall in it, plus its flat fee once reached;
 * - volume: every unit at the price of the tier the total quantity falls in, plus that tier's flat fee;
 * - package: `ceil(quantity / packageSize) × unitAmount` (e.g. 1,000 API calls per package).
 * `usage: 'metered'` prices the period's usage in arrears (the invoice of issue #14); 'licensed' prices
 * the subscription's quantity in advance.
 */
export type PricingModel = 'flat' | 'per_unit' | 'tiered' | 'volume' | 'package';

export interface Tier {
  /** Inclusive upper bound of the tier; null for the last (unbounded) tier. */
  upTo: number | null;
  unitAmount: number;
  flatAmount: number;
}

export interface Pricing {
  model: PricingModel;
  flatAmount: number;
  unitAmount: number;
  tiers: Tier[];
  packageSize: number;
}

export function validatePricing(p: Pricing): string | null {
  for (const [k, v] of Object.entries({ flatAmount: p.flatAmount, unitAmount: p.unitAmount, packageSize: p.packageSize })) {
    if (!Number.isSafeInteger(v) || v < 0) return `${k} must be a non-negative integer (minor units)`;
  }
  if (p.model === 'package' && p.packageSize < 1) return 'a package price needs packageSize ≥ 1';
  if (p.model === 'tiered' || p.model === 'volume') {
    if (p.tiers.length === 0) return `a ${p.model} price needs at least one tier`;
    let prev = 0;
    for (const [i, t] of p.tiers.entries()) {
      if (!Number.isSafeInteger(t.unitAmount) || t.unitAmount < 0 || !Number.isSafeInteger(t.flatAmount) || t.flatAmount < 0) return `tier ${i + 1}: amounts must be non-negative integers`;
      const last = i === p.tiers.length - 1;
      if (last !== (t.upTo === null)) return 'only the last tier is unbounded (upTo: null), and it must be';
      if (t.upTo !== null && (!Number.isSafeInteger(t.upTo) || t.upTo <= prev)) return `tier ${i + 1}: upTo must increase`;
      if (t.upTo !== null) prev = t.upTo;
    }
  }
  return null;
}

/** The amount for `quantity` units (a non-negative integer); throws past the safe-integer range. */
export function amountFor(p: Pricing, quantity: number): number {
  if (!Number.isSafeInteger(quantity) || quantity < 0) throw new RangeError('quantity must be a non-negative integer');
  const q = BigInt(quantity);
  let total: bigint;
  switch (p.model) {
    case 'flat':
      total = BigInt(p.flatAmount);
      break;
    case 'per_unit':
      total = BigInt(p.unitAmount) * q + BigInt(p.flatAmount);
      break;
    case 'package':
      total = ((q + BigInt(p.packageSize) - 1n) / BigInt(p.packageSize)) * BigInt(p.unitAmount) + BigInt(p.flatAmount);
      break;
    case 'volume': {
      const tier = p.tiers.find((t) => t.upTo === null || quantity <= t.upTo) ?? p.tiers[p.tiers.length - 1]!;
      total = quantity === 0 ? 0n : BigInt(tier.unitAmount) * q + BigInt(tier.flatAmount);
      break;
    }
    case 'tiered': {
      total = 0n;
      let below = 0n;
      for (const t of p.tiers) {
        if (q <= below) break;
        const top = t.upTo === null ? q : BigInt(Math.min(t.upTo, quantity));
        total += (top - below) * BigInt(t.unitAmount) + BigInt(t.flatAmount);
        below = top;
      }
      break;
    }
  }
  const n = Number(total);
  return assertMinor(n, 'price');
}
