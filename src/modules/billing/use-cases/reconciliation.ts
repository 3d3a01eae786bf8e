import type { Logger } from 'pino';
import { GatewayRequestError, GatewayUnavailableError, type GatewayName, type GatewayPayment, type PaymentGateway } from '../billing.gateway.ts';
import { paymentDrift } from '../billing.payments-metrics.ts';
import type { PaymentUpdates, ReconciliationAttempt } from './payment-webhooks.ts';

/**
 * The payment reconciliation (`billing.payments_reconcile` schedule): local attempts, page by page, against
 * the gateway's own record of each payment. A missed or lost webhook shows up as a status difference and
 * is repaired through the same `applyGatewayPaymentUpdate` a webhook uses. What cannot be repaired
 * automatically is reported (metric, warn log line, and the run's result): a payment the gateway does not
 * know, or one whose amount, currency or org differs from the local attempt — those need a person.
 */
export interface ReconciliationDeps {
  updates: PaymentUpdates;
  /** Guarded gateways (guardedGateway): a failing gateway opens its breaker instead of stalling the run. */
  gateways: Partial<Record<GatewayName, PaymentGateway>>;
  defaultGateway: GatewayName;
  logger: Logger;
  /** Attempts per page (default 100) and pages per run (default 50): the rest waits for the next run. */
  pageSize?: number;
  maxPages?: number;
  /** Settled attempts changed within this window are compared too (default 3 days). */
  lookbackMs?: number;
}

export type DriftKind = 'status' | 'missing_at_gateway' | 'gateway_refused' | 'amount' | 'currency' | 'org' | 'repair_failed';

export interface Drift {
  kind: DriftKind;
  orgId: string;
  invoiceId: string;
  attemptId: string;
  gatewayPaymentId: string;
  local: { status: string; amount: number; currency: string };
  gateway?: { status: string; amount: number; currency: string };
  detail?: string;
}

export interface ReconciliationReport {
  checked: number;
  inSync: number;
  repaired: Drift[];
  /** Differences reconciliation cannot repair: reported, counted, left for a person. */
  unrepaired: Drift[];
  /** The gateway could not be asked (unavailable / breaker open): these are compared again next run. */
  unavailable: number;
}

export interface PaymentReconciliation {
  run(now?: Date): Promise<ReconciliationReport>;
}

export function paymentReconciliation(deps: ReconciliationDeps): PaymentReconciliation {
  const pageSize = deps.pageSize ?? 100;
  const maxPages = deps.maxPages ?? 50;
  const lookbackMs = deps.lookbackMs ?? 3 * 86_400_000;

  function compare(a: ReconciliationAttempt, p: GatewayPayment): DriftKind | 'in_sync' {
    if (p.metadata.orgId !== undefined && p.metadata.orgId !== a.orgId) return 'org';
    if (p.currency.toUpperCase() !== a.currency.toUpperCase()) return 'currency';
    if (p.amount !== a.amount) return 'amount';
    return p.status === a.status ? 'in_sync' : 'status';
  }

  return {
    async run(now = new Date()) {
      const report: ReconciliationReport = { checked: 0, inSync: 0, repaired: [], unrepaired: [], unavailable: 0 };
      const since = new Date(now.getTime() - lookbackMs);
      const record = (d: Drift, gatewayName: GatewayName, outcome: 'repaired' | 'reported') => {
        paymentDrift.inc({ gateway: gatewayName, kind: d.kind, outcome });
        if (outcome === 'repaired') {
          report.repaired.push(d);
          deps.logger.info({ drift: d.kind, orgId: d.orgId, attemptId: d.attemptId, gatewayPaymentId: d.gatewayPaymentId, local: d.local.status, gatewayStatus: d.gateway?.status }, 'payment drift repaired from the gateway');
        } else {
          report.unrepaired.push(d);
          deps.logger.warn(
            { drift: d.kind, orgId: d.orgId, invoiceId: d.invoiceId, attemptId: d.attemptId, gatewayPaymentId: d.gatewayPaymentId, local: d.local, gatewayState: d.gateway, detail: d.detail },
            'payment drift reconciliation cannot repair',
          );
        }
      };

      let after: string | undefined;
      pages: for (let page = 0; page < maxPages; page++) {
        const attempts = await deps.updates.listPaymentAttemptsForReconciliation({ since, limit: pageSize, ...(after ? { after } : {}) });
        for (const a of attempts) {
          const gatewayName = a.gateway ?? deps.defaultGateway;
          const gateway = deps.gateways[gatewayName];
          const base = { orgId: a.orgId, invoiceId: a.invoiceId, attemptId: a.attemptId, gatewayPaymentId: a.gatewayPaymentId, local: { status: a.status, amount: a.amount, currency: a.currency } };
          if (!gateway) {
            record({ ...base, kind: 'gateway_refused', detail: `gateway ${gatewayName} is not configured` }, gatewayName, 'reported');
            continue;
          }
          report.checked++;
          let payment: GatewayPayment;
          try {
            payment = await gateway.retrievePayment(a.gatewayPaymentId);
          } catch (err) {
            if (err instanceof GatewayUnavailableError) {
              // The breaker is (or is about to be) open: stop asking; the next run compares the rest.
              report.unavailable++;
              paymentDrift.inc({ gateway: gatewayName, kind: 'unavailable', outcome: 'reported' });
              deps.logger.warn({ gateway: gatewayName, error: err.message }, 'payment reconciliation stopped: gateway unavailable');
              break pages;
            }
            if (err instanceof GatewayRequestError) {
              const kind = err.code === 'resource_missing' || err.status === 404 ? 'missing_at_gateway' : 'gateway_refused';
              record({ ...base, kind, detail: `${err.code}: ${err.message}`.slice(0, 300) }, gatewayName, 'reported');
              continue;
            }
            throw err;
          }
          const gatewayState = { status: payment.status, amount: payment.amount, currency: payment.currency };
          const verdict = compare(a, payment);
          if (verdict === 'in_sync') {
            report.inSync++;
            continue;
          }
          if (verdict !== 'status') {
            record({ ...base, kind: verdict, gateway: gatewayState }, gatewayName, 'reported');
            continue;
          }
          try {
            await deps.updates.applyGatewayPaymentUpdate(a.orgId, {
              gatewayPaymentId: payment.gatewayPaymentId,
              status: payment.status,
              ...(payment.failureCode ? { failureCode: payment.failureCode } : {}),
              amount: payment.amount,
              amountRefunded: payment.amountRefunded,
              currency: payment.currency,
              metadata: payment.metadata,
              gateway: gatewayName,
              source: 'reconciliation',
            });
            record({ ...base, kind: 'status', gateway: gatewayState }, gatewayName, 'repaired');
          } catch (err) {
            record({ ...base, kind: 'repair_failed', gateway: gatewayState, detail: String((err as Error)?.message ?? err).slice(0, 300) }, gatewayName, 'reported');
          }
        }
        if (attempts.length < pageSize) break;
        const last = attempts[attempts.length - 1]!.attemptId;
        // A source that ignores the cursor would hand out the same page forever.
        if (last === after) break;
        after = last;
      }
      deps.logger.info(
        { checked: report.checked, inSync: report.inSync, repaired: report.repaired.length, unrepaired: report.unrepaired.length, unavailable: report.unavailable },
        'payment reconciliation run',
      );
      return report;
    },
  };
}
