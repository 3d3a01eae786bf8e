import { createHash, randomUUID } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import {
  GatewayRequestError,
  GatewayUnavailableError,
  type GatewayFailureCode,
  type GatewayPayment,
  type GatewayRefund,
  type PaymentGateway,
} from './billing.gateway.ts';

/**
 * The `sandbox` payment gateway: the embedded default. No network; the outcome of a charge is chosen by the
 * payment method it was attached from, with Stripe's test card numbers (and a few sandbox tokens for what
 * Stripe has no card for), so `npm start` runs the whole loop offline and tests get every outcome on demand.
 *
 * Like Stripe it honours idempotency keys: a request repeated with the same key returns the first answer
 * (never a second charge); the same key with different parameters is refused. Its state is kept in an
 * append-only JSON-lines file (fsync'd before an answer), so a restarted process forgets no charge — or in
 * memory when no file is given (tests).
 */

type Behaviour =
  | { outcome: 'succeeded' }
  | { outcome: 'failed'; code: GatewayFailureCode; message: string }
  | { outcome: 'requires_action' }
  | { outcome: 'timeout' }
  | { outcome: 'delayed' };

interface TestCard {
  number: string;
  brand: string;
  behaviour: Behaviour;
}

/** Stripe's test numbers (docs.stripe.com/testing) and their tok_/pm_card_ aliases; `tok_sandbox_*` are ours. */
export const SANDBOX_CARDS: Record<string, TestCard> = {
  success: { number: '4242424242424242', brand: 'visa', behaviour: { outcome: 'succeeded' } },
  declined: { number: '4000000000000002', brand: 'visa', behaviour: { outcome: 'failed', code: 'card_declined', message: 'Your card was declined.' } },
  insufficientFunds: { number: '4000000000009995', brand: 'visa', behaviour: { outcome: 'failed', code: 'insufficient_funds', message: 'Your card has insufficient funds.' } },
  authenticationRequired: { number: '4000002500003155', brand: 'visa', behaviour: { outcome: 'requires_action' } },
  processingError: { number: '4000000000000119', brand: 'visa', behaviour: { outcome: 'failed', code: 'processing_error', message: 'An error occurred while processing your card.' } },
  expired: { number: '4000000000000069', brand: 'visa', behaviour: { outcome: 'failed', code: 'expired_card', message: 'Your card has expired.' } },
  mastercard: { number: '5555555555554444', brand: 'mastercard', behaviour: { outcome: 'succeeded' } },
  /** The charge happens, but the answer never arrives (the caller sees a timeout; a retry with the key gets it). */
  timeout: { number: '4000000000000000-timeout', brand: 'visa', behaviour: { outcome: 'timeout' } },
  /** Accepted as `processing`; settles to `succeeded` when retrieved after `settleAfterMs`. */
  delayed: { number: '4000000000000000-delayed', brand: 'visa', behaviour: { outcome: 'delayed' } },
};

const TOKENS: Record<string, keyof typeof SANDBOX_CARDS> = {
  tok_visa: 'success',
  pm_card_visa: 'success',
  tok_mastercard: 'mastercard',
  pm_card_mastercard: 'mastercard',
  tok_chargeDeclined: 'declined',
  pm_card_chargeDeclined: 'declined',
  tok_chargeDeclinedInsufficientFunds: 'insufficientFunds',
  pm_card_chargeDeclinedInsufficientFunds: 'insufficientFunds',
  tok_authenticationRequired: 'authenticationRequired',
  pm_card_authenticationRequired: 'authenticationRequired',
  tok_chargeDeclinedProcessingError: 'processingError',
  pm_card_chargeDeclinedProcessingError: 'processingError',
  tok_chargeDeclinedExpiredCard: 'expired',
  tok_sandbox_timeout: 'timeout',
  tok_sandbox_delayed: 'delayed',
};

function cardFor(token: string): TestCard | undefined {
  const digits = token.replace(/[\s-]/g, '');
  const byNumber = Object.values(SANDBOX_CARDS).find((c) => c.number === digits || c.number === token);
  if (byNumber) return byNumber;
  const alias = TOKENS[token];
  return alias ? SANDBOX_CARDS[alias] : undefined;
}

type Record_ =
  | { t: 'customer'; id: string; orgId: string }
  | { t: 'pm'; id: string; customer: string; token: string; brand: string; last4: string }
  | { t: 'payment'; p: StoredPayment }
  | { t: 'refund'; r: GatewayRefund }
  | { t: 'idem'; key: string; op: string; fingerprint: string; result: unknown };

interface StoredPayment extends Omit<GatewayPayment, 'createdAt'> {
  createdAt: string;
  idempotencyKey: string;
  settleAt?: number;
}

export interface SandboxGatewayOptions {
  /** Append-only state file; omitted = memory only. */
  file?: string;
  /** How long a `delayed` payment stays `processing` (default 2 s; 0 settles on the first retrieve). */
  settleAfterMs?: number;
  now?: () => number;
}

export interface SandboxGateway extends PaymentGateway {
  /** Every payment the sandbox ever accepted (tests count them). */
  payments(): GatewayPayment[];
}

export function createSandboxGateway(opts: SandboxGatewayOptions = {}): SandboxGateway {
  const now = opts.now ?? Date.now;
  const settleAfterMs = opts.settleAfterMs ?? 2_000;
  const customers = new Map<string, { orgId: string }>();
  const methods = new Map<string, { customer: string; token: string; brand: string; last4: string }>();
  const payments = new Map<string, StoredPayment>();
  const refunds = new Map<string, GatewayRefund>();
  const idem = new Map<string, { op: string; fingerprint: string; result: unknown }>();
  let fd: number | undefined;

  const apply = (r: Record_) => {
    if (r.t === 'customer') customers.set(r.id, { orgId: r.orgId });
    else if (r.t === 'pm') methods.set(r.id, { customer: r.customer, token: r.token, brand: r.brand, last4: r.last4 });
    else if (r.t === 'payment') payments.set(r.p.gatewayPaymentId, r.p);
    else if (r.t === 'refund') refunds.set(r.r.gatewayRefundId, r.r);
    else idem.set(r.key, { op: r.op, fingerprint: r.fingerprint, result: r.result });
  };

  // Read at start (a read-only filesystem is fine); the file is created on the first write only, so a process
  // that never charges (e.g. a read-only production image on another gateway's webhooks) needs no writable dir.
  if (opts.file && fs.existsSync(opts.file)) {
    for (const line of fs.readFileSync(opts.file, 'utf8').split('\n')) {
      // A torn last line (the process died mid-write) was never acknowledged: skip it.
      if (!line.trim()) continue;
      try {
        apply(JSON.parse(line) as Record_);
      } catch {
        /* torn write */
      }
    }
  }
  const file = (): number | undefined => {
    if (fd === undefined && opts.file) {
      fs.mkdirSync(path.dirname(opts.file), { recursive: true });
      fd = fs.openSync(opts.file, 'a');
    }
    return fd;
  };

  /** Durable before the caller hears of it (and before it is in memory): a crash after this line can never lose the record. */
  const write = (...records: Record_[]) => {
    const f = file();
    if (f !== undefined) {
      fs.writeSync(f, records.map((r) => JSON.stringify(r)).join('\n') + '\n');
      fs.fsyncSync(f);
    }
    for (const r of records) apply(r);
  };

  const fingerprint = (input: unknown) => createHash('sha256').update(JSON.stringify(input)).digest('hex');

  /** Stripe's rule: a key replays its first answer; reused with other parameters it is an error. */
  function replay<T>(key: string, op: string, input: unknown): T | undefined {
    if (!key) throw new GatewayRequestError('an idempotency key is required', 'sandbox', 'idempotency_key_missing', 400);
    const seen = idem.get(key);
    if (!seen) return undefined;
    if (seen.op !== op || seen.fingerprint !== fingerprint(input)) {
      throw new GatewayRequestError(`Keys for idempotent requests can only be used with the same parameters they were first used with (${key})`, 'sandbox', 'idempotency_key_reuse', 400);
    }
    return seen.result as T;
  }

  const view = (p: StoredPayment): GatewayPayment => {
    const { idempotencyKey: _k, settleAt: _s, ...rest } = p;
    return { ...rest, metadata: { ...rest.metadata }, createdAt: new Date(p.createdAt) };
  };

  return {
    name: 'sandbox',
    async createCustomer(input, key) {
      const hit = replay<{ gatewayCustomerId: string }>(key, 'createCustomer', input);
      if (hit) return hit;
      const id = `cus_sbx_${randomUUID().replace(/-/g, '').slice(0, 20)}`;
      const result = { gatewayCustomerId: id };
      write({ t: 'customer', id, orgId: input.orgId }, { t: 'idem', key, op: 'createCustomer', fingerprint: fingerprint(input), result });
      return result;
    },

    async attachPaymentMethod(input, key) {
      const hit = replay<{ paymentMethodId: string; brand: string | null; last4: string | null }>(key, 'attachPaymentMethod', input);
      if (hit) return hit;
      if (!customers.has(input.gatewayCustomerId)) throw new GatewayRequestError(`No such customer: '${input.gatewayCustomerId}'`, 'sandbox', 'resource_missing', 404);
      const card = cardFor(input.paymentMethod);
      if (!card) throw new GatewayRequestError(`No such PaymentMethod: '${input.paymentMethod}' (use a test card number or token)`, 'sandbox', 'resource_missing', 404);
      const id = `pm_sbx_${randomUUID().replace(/-/g, '').slice(0, 20)}`;
      const last4 = card.number.replace(/\D/g, '').slice(-4).padStart(4, '0');
      const result = { paymentMethodId: id, brand: card.brand, last4 };
      write({ t: 'pm', id, customer: input.gatewayCustomerId, token: input.paymentMethod, brand: card.brand, last4 }, { t: 'idem', key, op: 'attachPaymentMethod', fingerprint: fingerprint(input), result });
      return result;
    },

    async charge(input, key) {
      const hit = replay<{ gatewayPaymentId: string }>(key, 'charge', input);
      if (hit) return view(payments.get(hit.gatewayPaymentId)!);
      if (!Number.isSafeInteger(input.amount) || input.amount <= 0) throw new GatewayRequestError('amount must be a positive integer', 'sandbox', 'parameter_invalid_integer', 400);
      const pm = methods.get(input.paymentMethodId);
      if (!pm || pm.customer !== input.gatewayCustomerId) throw new GatewayRequestError(`No such PaymentMethod: '${input.paymentMethodId}'`, 'sandbox', 'resource_missing', 404);
      const behaviour = cardFor(pm.token)!.behaviour;
      const p: StoredPayment = {
        gatewayPaymentId: `pi_sbx_${randomUUID().replace(/-/g, '').slice(0, 24)}`,
        status: 'succeeded',
        amount: input.amount,
        currency: input.currency,
        amountRefunded: 0,
        metadata: { ...input.metadata },
        createdAt: new Date(now()).toISOString(),
        idempotencyKey: key,
      };
      if (behaviour.outcome === 'failed') Object.assign(p, { status: 'failed', failureCode: behaviour.code, failureMessage: behaviour.message });
      else if (behaviour.outcome === 'requires_action') Object.assign(p, { status: 'requires_action', failureCode: 'authentication_required', failureMessage: 'This payment requires authentication by the cardholder.' });
      else if (behaviour.outcome === 'delayed') Object.assign(p, { status: 'processing', settleAt: now() + settleAfterMs });
      write({ t: 'payment', p }, { t: 'idem', key, op: 'charge', fingerprint: fingerprint(input), result: { gatewayPaymentId: p.gatewayPaymentId } });
      // The charge is recorded, the answer is lost: only a retry with the same key learns the outcome.
      if (behaviour.outcome === 'timeout') throw new GatewayUnavailableError('sandbox: the gateway did not answer in time', 'sandbox');
      return view(p);
    },

    async refund(input, key) {
      const hit = replay<GatewayRefund>(key, 'refund', input);
      if (hit) return hit;
      const p = payments.get(input.gatewayPaymentId);
      if (!p) throw new GatewayRequestError(`No such payment: '${input.gatewayPaymentId}'`, 'sandbox', 'resource_missing', 404);
      if (p.status !== 'succeeded') throw new GatewayRequestError('only a succeeded payment can be refunded', 'sandbox', 'charge_not_refundable', 400);
      const amount = input.amount ?? p.amount - p.amountRefunded;
      if (!Number.isSafeInteger(amount) || amount <= 0 || amount > p.amount - p.amountRefunded) {
        throw new GatewayRequestError(`Refund amount (${amount}) is greater than the unrefunded amount`, 'sandbox', 'amount_too_large', 400);
      }
      const r: GatewayRefund = { gatewayRefundId: `re_sbx_${randomUUID().replace(/-/g, '').slice(0, 24)}`, gatewayPaymentId: p.gatewayPaymentId, amount, status: 'succeeded' };
      write({ t: 'payment', p: { ...p, amountRefunded: p.amountRefunded + amount } }, { t: 'refund', r }, { t: 'idem', key, op: 'refund', fingerprint: fingerprint(input), result: r });
      return r;
    },

    async retrievePayment(id) {
      const p = payments.get(id);
      if (!p) throw new GatewayRequestError(`No such payment: '${id}'`, 'sandbox', 'resource_missing', 404);
      if (p.status === 'processing' && p.settleAt !== undefined && now() >= p.settleAt) {
        const settled: StoredPayment = { ...p, status: 'succeeded' };
        delete settled.settleAt;
        write({ t: 'payment', p: settled });
        return view(settled);
      }
      return view(p);
    },

    payments: () => [...payments.values()].map(view),
  };
}
