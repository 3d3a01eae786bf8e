import { Type } from '@sinclair/typebox';
import { actorOf, tenantActorOf as actor } from '../../platform/http/actor.ts';
import { PLATFORM_ADMIN } from '../../platform/http/auth.ts';
import type { App } from '../../platform/http/server.ts';
import { noPaymentMethod } from './billing.errors.ts';
import {
  BalanceSchema,
  CouponSchema,
  CreateCouponBody,
  CreateInvoiceBody,
  CreatePromotionCodeBody,
  CreateTaxRateBody,
  CreditNoteBody,
  CreditNoteSchema,
  DiscountSchema,
  InvoiceListQuery,
  InvoiceParams,
  InvoiceSchema,
  InvoiceSummarySchema,
  PaymentListQuery,
  PaymentMethodBody,
  PaymentMethodSchema,
  PaymentSchema,
  PdfLinkSchema,
  PromotionCodeSchema,
  RedeemBody,
  TaxRateSchema,
} from './billing.invoice-schemas.ts';
import { OrgParams } from './billing.schemas.ts';
import { BILLING_PERMISSIONS } from './billing.routes.ts';
import type { BillingService } from './billing.service.ts';
import type { InvoiceStatus } from './invoices.repo.ts';
import type { CreditNoteInput, NewCouponInput } from './use-cases/invoices.ts';

const security = [{ bearer: [] }];
const NoContent = Type.Null({ description: 'Done' });
const page = <T extends { id: string }>(data: T[], limit: number) => ({ data, nextCursor: data.length === limit ? data.at(-1)!.id : null });

/** Invoices, payments, discounts and taxes (issue #14). */
export function invoiceRoutes(service: BillingService): (app: App) => Promise<void> {
  return async (app: App) => {
    const perm = BILLING_PERMISSIONS;
    const read = (summary: string, extra: object) => ({ config: { permission: perm.read }, schema: { tags: ['billing'], summary, security, ...extra } });
    const manage = (summary: string, extra: object) => ({ config: { permission: perm.manage }, schema: { tags: ['billing'], summary, security, ...extra } });
    type P = { orgId: string; invoiceId: string };

    // ---------------------------------------------------------------- invoices
    app.get('/orgs/:orgId/billing/invoices', read('Invoices, newest first', { params: OrgParams, querystring: InvoiceListQuery, response: { 200: Type.Object({ data: Type.Array(InvoiceSummarySchema), nextCursor: Type.Union([Type.String(), Type.Null()]) }) } }), async (request) => {
      const q = request.query as { status?: InvoiceStatus; before?: string; limit?: number };
      const limit = q.limit ?? 20;
      return page(await service.listInvoices((request.params as P).orgId, { limit, before: q.before, status: q.status }), limit);
    });
    app.post('/orgs/:orgId/billing/invoices', manage('Invoice what is owed now (open charges, closed usage), finalized unless finalize=false', { params: OrgParams, body: CreateInvoiceBody, response: { 201: InvoiceSchema } }), async (request, reply) =>
      reply.code(201).send(await service.createInvoice(actor(request), request.body as { finalize?: boolean })),
    );
    app.get('/orgs/:orgId/billing/invoices/:invoiceId', read('An invoice with its lines (each with how it was computed) and credit notes', { params: InvoiceParams, response: { 200: InvoiceSchema } }), async (request) =>
      service.getInvoice((request.params as P).orgId, (request.params as P).invoiceId),
    );
    app.delete('/orgs/:orgId/billing/invoices/:invoiceId', manage('Delete a draft (its charges are owed again)', { params: InvoiceParams, response: { 204: NoContent } }), async (request, reply) => {
      await service.deleteDraft(actor(request), (request.params as P).invoiceId);
      return reply.code(204).send(null);
    });
    const action = (path: string, summary: string, fn: (ctx: ReturnType<typeof actor>, id: string) => Promise<unknown>) =>
      app.post(`/orgs/:orgId/billing/invoices/:invoiceId/${path}`, manage(summary, { params: InvoiceParams, response: { 200: InvoiceSchema } }), async (request) => fn(actor(request), (request.params as P).invoiceId));
    action('finalize', 'Finalize a draft: discount, tax, credit balance, the next gap-free number', (ctx, id) => service.finalizeInvoice(ctx, id));
    action('void', 'Void a finalized, unpaid invoice', (ctx, id) => service.voidInvoice(ctx, id));
    action('mark-uncollectible', 'Stop collecting a finalized invoice', (ctx, id) => service.markUncollectible(ctx, id));
    action('pay', "Collect now with the org's payment method (a manual retry)", (ctx, id) => service.payInvoice(ctx, id));
    app.post('/orgs/:orgId/billing/invoices/:invoiceId/credit-notes', manage('Credit a finalized invoice: reduces what is owed, else credits the balance (or refunds)', { params: InvoiceParams, body: CreditNoteBody, response: { 201: CreditNoteSchema } }), async (request, reply) =>
      reply.code(201).send(await service.createCreditNote(actor(request), (request.params as P).invoiceId, request.body as CreditNoteInput)),
    );
    app.get('/orgs/:orgId/billing/invoices/:invoiceId/pdf', read('A signed, expiring download link of the invoice PDF (409 while it is rendered)', { params: InvoiceParams, response: { 200: PdfLinkSchema } }), async (request) =>
      service.invoicePdfLink((request.params as P).orgId, (request.params as P).invoiceId),
    );

    // ---------------------------------------------------------------- payments
    app.get('/orgs/:orgId/billing/payment-method', read("The org's default payment method", { params: OrgParams, response: { 200: PaymentMethodSchema } }), async (request) => {
      const m = await service.getPaymentMethod((request.params as P).orgId);
      if (!m) throw noPaymentMethod();
      return m;
    });
    app.put('/orgs/:orgId/billing/payment-method', manage('Set the default payment method from a gateway token; unpaid invoices are retried with it', { params: OrgParams, body: PaymentMethodBody, response: { 200: PaymentMethodSchema } }), async (request) =>
      service.setPaymentMethod(actor(request), (request.body as { token: string }).token),
    );
    app.get('/orgs/:orgId/billing/payments', read('Payment attempts, newest first', { params: OrgParams, querystring: PaymentListQuery, response: { 200: Type.Object({ data: Type.Array(PaymentSchema), nextCursor: Type.Union([Type.String(), Type.Null()]) }) } }), async (request) => {
      const q = request.query as { invoiceId?: string; before?: string; limit?: number };
      const limit = q.limit ?? 20;
      return page(await service.listPayments((request.params as P).orgId, { limit, before: q.before, invoiceId: q.invoiceId }), limit);
    });
    app.get('/orgs/:orgId/billing/credit-balance', read('Credit the org has, applied to its next invoices', { params: OrgParams, response: { 200: BalanceSchema } }), async (request) => service.creditBalance((request.params as P).orgId));
    app.get('/orgs/:orgId/billing/discount', read("The org's active discount (null when none)", { params: OrgParams, response: { 200: Type.Object({ discount: Type.Union([DiscountSchema, Type.Null()]) }) } }), async (request) => ({
      discount: await service.getDiscount((request.params as P).orgId),
    }));
    app.post('/orgs/:orgId/billing/discount', manage('Redeem a promotion code (replaces the active discount)', { params: OrgParams, body: RedeemBody, response: { 200: DiscountSchema } }), async (request) =>
      service.redeemPromotionCode(actor(request), (request.body as { promotionCode: string }).promotionCode),
    );

    // ---------------------------------------------------------------- discounts and taxes (platform admins)
    const admin = (summary: string, extra: object = {}) => ({ config: { permission: PLATFORM_ADMIN }, schema: { tags: ['billing-admin'], summary, security, ...extra } });
    app.get('/admin/billing/coupons', admin('List coupons', { response: { 200: Type.Object({ data: Type.Array(CouponSchema) }) } }), async () => ({ data: await service.listCoupons() }));
    app.post('/admin/billing/coupons', admin('Create a coupon (percent or fixed; once, repeating or forever)', { body: CreateCouponBody, response: { 201: CouponSchema } }), async (request, reply) =>
      reply.code(201).send(await service.createCoupon(actorOf(request), request.body as NewCouponInput)),
    );
    app.get('/admin/billing/promotion-codes', admin('List promotion codes', { response: { 200: Type.Object({ data: Type.Array(PromotionCodeSchema) }) } }), async () => ({ data: await service.listPromotionCodes() }));
    app.post('/admin/billing/promotion-codes', admin('Create a promotion code for a coupon', { body: CreatePromotionCodeBody, response: { 201: PromotionCodeSchema } }), async (request, reply) =>
      reply.code(201).send(await service.createPromotionCode(actorOf(request), request.body as { code: string; couponId: string; maxRedemptions?: number; expiresAt?: string })),
    );
    app.get('/admin/billing/tax-rates', admin('Active tax rates', { response: { 200: Type.Object({ data: Type.Array(TaxRateSchema) }) } }), async () => ({ data: await service.listTaxRates() }));
    app.post('/admin/billing/tax-rates', admin('Add a tax rate for a country (and region); replaces the active one there', { body: CreateTaxRateBody, response: { 201: TaxRateSchema } }), async (request, reply) =>
      reply.code(201).send(await service.createTaxRate(actorOf(request), request.body as { country: string; region?: string; name: string; percentage: number; inclusive?: boolean })),
    );
  };
}
