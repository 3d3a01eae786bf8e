import { isUuid } from '../../platform/ids.ts';
import type { InvoiceUseCases } from './use-cases/invoices.ts';

/**
 * `plinth billing verify [--org <orgId>] [--invoice <invoiceId>]`: recomputes every finalized invoice from the
 * usage ledger, the charges and the price versions, and prints each difference. Exit 0 when all match,
 * 1 when anything differs (a tampered line, a changed ledger), 2 on misuse.
 */
export async function runBillingCommand(
  billing: Pick<InvoiceUseCases, 'verifyInvoices' | 'invoiceOrgIds'>,
  args: string[],
  out: (line: string) => void = console.log,
): Promise<number> {
  const [sub, ...rest] = args;
  const opts: Record<string, string> = {};
  for (let i = 0; i < rest.length; i++) {
    const [k, inline] = rest[i]!.split('=', 2) as [string, string | undefined];
    if (k !== '--org' && k !== '--invoice') return usage(out);
    const v = inline ?? rest[++i];
    if (!v || !isUuid(v)) return usage(out);
    opts[k.slice(2)] = v;
  }
  if (sub !== 'verify' || (opts.invoice && !opts.org)) return usage(out);
  const orgs: string[] = [];
  if (opts.org) orgs.push(opts.org);
  else {
    let after: string | undefined;
    for (;;) {
      const page = await billing.invoiceOrgIds(after, 500);
      orgs.push(...page);
      if (page.length < 500) break;
      after = page.at(-1);
    }
  }
  let invoices = 0;
  let mismatched = 0;
  for (const orgId of orgs) {
    const r = await billing.verifyInvoices(orgId, opts.invoice);
    invoices += r.invoices;
    mismatched += r.mismatches.length;
    for (const m of r.mismatches) out(`mismatch ${m.orgId} invoice ${m.number ?? m.invoiceId}${m.lineId ? ` line ${m.lineId}` : ''} ${m.field}: stored ${m.stored}, recomputed ${m.recomputed}`);
  }
  out(`${invoices} invoice(s) of ${orgs.length} org(s) recomputed, ${mismatched} mismatch(es)`);
  return mismatched > 0 ? 1 : 0;
}

function usage(out: (line: string) => void): number {
  out('usage: plinth billing verify [--org <orgId> [--invoice <invoiceId>]]');
  return 2;
}
