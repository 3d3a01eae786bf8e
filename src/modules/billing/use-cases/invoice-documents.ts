import { Readable } from 'node:stream';
import type { PaymentsConfig } from '../../../platform/config.ts';
import type { TxHandle } from '../../../platform/db/database.ts';
import { invoiceNotFound, pdfNotReady } from '../billing.errors.ts';
import { renderInvoicePdf } from '../billing.invoice-pdf.ts';
import { formatMoney } from '../billing.money.ts';
import * as repo from '../invoices.repo.ts';
import type { BillingContext } from './context.ts';
import type { InvoicingCore } from './invoices.ts';

export interface InvoiceDocumentUseCases {
  /** Outbox consumer of billing.invoice_finalized / _paid: (re)renders the PDF into storage, key saved in the handler's transaction. */
  renderInvoicePdf(trx: TxHandle, orgId: string, invoiceId: string): Promise<void>;
  /** A signed, expiring download link of the invoice's PDF (409 while it is being rendered). */
  invoicePdfLink(orgId: string, invoiceId: string): Promise<{ url: string; expiresAt: Date }>;
}

export const invoicePdfKey = (orgId: string, invoiceId: string, version: string) => `invoices/${orgId}/${invoiceId}-${version}.pdf`;

export function invoiceDocumentUseCases(c: BillingContext, core: InvoicingCore, config: Pick<PaymentsConfig, 'invoiceLinkTtlSec'>): InvoiceDocumentUseCases {
  const { scope } = core;
  return {
    async renderInvoicePdf(handle, orgId, invoiceId) {
      const storage = c.deps.storage;
      if (!storage) return;
      const trx = scope.join(handle);
      // No row lock while rendering (milliseconds of CPU per invoice): payment collection, which locks the
      // invoice, must not queue behind PDFs. The key is saved only if the status is still the rendered one.
      const inv = await repo.findInvoice(trx, orgId, invoiceId);
      if (!inv || inv.status === 'draft') return;
      const [lines, notes] = await Promise.all([repo.listLines(trx, orgId, invoiceId), repo.listCreditNotes(trx, orgId, invoiceId)]);
      const pdf = await renderInvoicePdf(inv, lines, notes, { name: 'Plinth' });
      // One object per invoice state: a redelivered render overwrites the same key with the same bytes.
      const key = invoicePdfKey(orgId, invoiceId, inv.status);
      await storage.put(key, Readable.from([pdf]), { contentType: 'application/pdf' });
      await repo.setPdfKey(trx, orgId, invoiceId, key, inv.status);
    },
    async invoicePdfLink(orgId, invoiceId) {
      const inv = await scope.withTenantRead(orgId, (trx) => repo.findInvoice(trx, orgId, invoiceId));
      if (!inv) throw invoiceNotFound();
      if (!inv.pdfKey || !c.deps.storage) throw pdfNotReady();
      const filename = `invoice-${(inv.number ?? inv.id).replace(/[^A-Za-z0-9_.-]/g, '_')}.pdf`;
      const url = await c.deps.storage.signedUrl(inv.pdfKey, { expiresInSec: config.invoiceLinkTtlSec, filename, contentType: 'application/pdf' });
      return { url, expiresAt: new Date(Date.now() + config.invoiceLinkTtlSec * 1000) };
    },
  };
}

/** The dunning e-mail for a payment event, to the billing contact (null: no contact on file). */
export async function dunningMail(
  scope: InvoicingCore['scope'],
  handle: TxHandle,
  orgId: string,
  kind: 'payment_failed' | 'uncollectible',
  p: { invoiceNumber?: string | null; number?: string | null; amount?: number; amountDue?: number; currency: string; failureCode?: string | null; nextPaymentAttemptAt?: string | null; finalAction?: string | null; finalActionAt?: string | null },
): Promise<{ to: string; subject: string; text: string } | null> {
  const trx = scope.join(handle);
  const customer = await trx.selectFrom('billing_customers').select(['email', 'name']).where('tenant_id', '=', orgId).executeTakeFirst();
  if (!customer?.email) return null;
  const number = p.invoiceNumber ?? p.number ?? '';
  const amount = formatMoney({ amount: p.amount ?? p.amountDue ?? 0, currency: p.currency });
  if (kind === 'uncollectible') {
    return {
      to: customer.email,
      subject: `Invoice ${number} could not be collected`,
      text: [`We could not collect ${amount} for invoice ${number} after several attempts.`, `Your subscription was ${p.finalAction === 'downgraded' ? 'moved to the free plan' : 'canceled'}.`, 'Add a payment method and subscribe again at any time.'].join('\n'),
    };
  }
  const next = p.nextPaymentAttemptAt
    ? `We will try again on ${p.nextPaymentAttemptAt.slice(0, 10)}.`
    : `This was the last attempt: on ${p.finalActionAt?.slice(0, 10)} your subscription will be ${p.finalAction === 'downgrade' ? 'moved to the free plan' : 'canceled'} unless the invoice is paid.`;
  return {
    to: customer.email,
    subject: `Payment of ${amount} for invoice ${number} failed`,
    text: [`The payment of ${amount} for invoice ${number} failed (${p.failureCode ?? 'unknown reason'}).`, next, 'Update your payment method to avoid an interruption.'].join('\n'),
  };
}
