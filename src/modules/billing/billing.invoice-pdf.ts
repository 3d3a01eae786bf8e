import type PDFKit from 'pdfkit';
import { formatMoney } from './billing.money.ts';
import type { CreditNote, Invoice, InvoiceLine } from './invoices.repo.ts';

/**
 * An invoice as a PDF (pdfkit, built-in Helvetica: no font files). Everything printed comes from the
 * finalized invoice — number, customer snapshot, lines, discount, tax, totals — so the document matches
 * the JSON the API serves. Fixed creation date (the finalization time) keeps re-renders byte-stable.
 * pdfkit is loaded on the first render: only the worker renders, and an API process need not hold it.
 */
let pdfkit: typeof PDFKit | undefined;

export async function renderInvoicePdf(invoice: Invoice, lines: InvoiceLine[], creditNotes: CreditNote[], seller: { name: string }): Promise<Buffer> {
  const at = invoice.finalizedAt ?? invoice.createdAt;
  const PDFDocument = (pdfkit ??= (await import('pdfkit')).default);
  const doc = new PDFDocument({ size: 'A4', margin: 50, info: { Title: `Invoice ${invoice.number ?? invoice.id}`, Author: seller.name, CreationDate: at, ModDate: at } });
  const chunks: Buffer[] = [];
  doc.on('data', (c: Buffer) => chunks.push(c));
  const done = new Promise<Buffer>((resolve, reject) => {
    doc.on('end', () => resolve(Buffer.concat(chunks)));
    doc.on('error', reject);
  });
  const money = (amount: number) => formatMoney({ amount, currency: invoice.currency });
  const day = (d: Date) => d.toISOString().slice(0, 10);
  const customer = invoice.customer as { name?: string; email?: string | null; address?: Record<string, string>; taxId?: string | null };

  doc.fontSize(20).text(seller.name, { continued: false });
  doc.moveDown(0.5).fontSize(14).text(`Invoice ${invoice.number ?? '(draft)'}`);
  doc.fontSize(10).fillColor('#444');
  doc.text(`Status: ${invoice.status}`);
  doc.text(`Issued: ${day(at)}`);
  doc.text(`Period: ${day(invoice.periodStart)} – ${day(invoice.periodEnd)}`);
  doc.moveDown();
  doc.fillColor('#000').fontSize(11).text('Bill to');
  doc.fontSize(10);
  if (customer.name) doc.text(customer.name);
  if (customer.email) doc.text(customer.email);
  for (const v of Object.values(customer.address ?? {})) if (v) doc.text(String(v));
  if (customer.taxId) doc.text(`Tax id: ${customer.taxId}`);
  doc.moveDown();

  const col = { desc: 50, qty: 330, amount: 420 };
  const header = doc.y;
  doc.fontSize(10).text('Description', col.desc, header).text('Qty', col.qty, header).text('Amount', col.amount, header, { width: 125, align: 'right' });
  doc.moveTo(50, doc.y + 2).lineTo(545, doc.y + 2).stroke();
  doc.moveDown(0.5);
  for (const l of lines) {
    const y = doc.y;
    doc.text(l.description, col.desc, y, { width: 270 });
    const after = doc.y;
    doc.text(String(l.quantity), col.qty, y).text(money(l.amount), col.amount, y, { width: 125, align: 'right' });
    doc.y = Math.max(after, doc.y);
    doc.moveDown(0.3);
  }
  doc.moveDown();
  const row = (label: string, amount: number) => {
    const y = doc.y;
    doc.text(label, 300, y).text(money(amount), col.amount, y, { width: 125, align: 'right' });
  };
  row('Subtotal', invoice.subtotal);
  if (invoice.discountTotal) row(`Discount${invoice.discount ? ` (${invoice.discount.name})` : ''}`, -invoice.discountTotal);
  if (invoice.tax) row(`${invoice.tax.name} ${invoice.tax.percentagePpm / 10_000} %${invoice.tax.inclusive ? ' (included)' : ''}`, invoice.taxTotal);
  row('Total', invoice.total);
  if (invoice.creditApplied) row('Credit applied', -invoice.creditApplied);
  for (const n of creditNotes) row(`Credit note (${n.reason})`, -n.amount);
  row('Amount due', invoice.amountDue);
  row('Paid', invoice.amountPaid);
  doc.end();
  return done;
}
