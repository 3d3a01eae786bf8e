import { findTaxRate, type IQ, type ITrx, type TaxSnapshot } from './invoices.repo.ts';

/** Where the customer is, as billing's customer address holds it (`country`: ISO 3166-1 alpha-2, `state`/`region`). */
export interface TaxLocation {
  country: string | null;
  region: string | null;
}

/**
 * The tax seam: which rate applies to a customer at a place. The rates table (platform admins manage it
 * under /v1/admin/billing/tax-rates) is the embedded implementation; a tax service (Stripe Tax, Avalara)
 * would be another one. The rate is snapshotted onto the invoice at finalization: later rate changes never
 * alter an issued invoice, and verification recomputes with the snapshot.
 */
export interface TaxProvider {
  rateFor(trx: ITrx | IQ, location: TaxLocation): Promise<TaxSnapshot | null>;
}

export function locationOf(address: Record<string, unknown>): TaxLocation {
  const s = (v: unknown) => (typeof v === 'string' && v.trim() ? v.trim().toUpperCase() : null);
  return { country: s(address.country), region: s(address.state) ?? s(address.region) };
}

export function createRatesTableTaxProvider(): TaxProvider {
  return {
    async rateFor(trx, location) {
      if (!location.country || !/^[A-Z]{2}$/.test(location.country)) return null;
      const rate = await findTaxRate(trx, location.country, location.region ?? '');
      if (!rate) return null;
      return { taxRateId: rate.id, name: rate.name, country: rate.country, region: rate.region, percentagePpm: rate.percentagePpm, inclusive: rate.inclusive };
    },
  };
}
