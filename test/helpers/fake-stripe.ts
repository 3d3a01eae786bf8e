import { createHash, randomBytes } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { parse as parseQuery } from 'node:querystring';

/**
 * Test-only: a local stand-in for the subset of Stripe's API that the `stripe` adapter uses, on a free
 * loopback port, reached through the official SDK's host/port/protocol settings. It speaks what the SDK
 * speaks: form-encoded bodies with bracketed keys (`metadata[orgId]=…`, `expand[0]=…`), JSON objects of the
 * documented shapes, error bodies `{ error: { type, code, decline_code, message, payment_intent? } }` with
 * Stripe's statuses (400/402/404/409/429/500), and Idempotency-Key semantics: the first response for a key
 * is stored and replayed with `Idempotent-Replayed: true` for the same parameters; other parameters under
 * the same key answer 400 `idempotency_error`. Outcomes follow Stripe's documented test tokens.
 *
 * Faults for resilience tests: `fail(n, kind)` makes the next n POSTs (or every request when `path` matches)
 * answer 500, reset the connection before answering, or answer late — after doing the work, like a gateway
 * whose response is lost, so a retry with the same key must find the stored result.
 */

type Obj = Record<string, any>;

export type FaultKind = 'http500' | 'reset' | 'delay' | 'reset_after_work' | 'rate_limit';
interface Fault {
  kind: FaultKind;
  remaining: number;
  delayMs: number;
  /** Only requests whose path starts with this (default: every request). */
  path?: string;
  /** Only requests with this Idempotency-Key (a late retry of an earlier call must not take the fault). */
  idempotencyKey?: string;
}

/** What a test token decides at confirmation (https://docs.stripe.com/testing#declined-payments). */
const TEST_PAYMENT_METHODS: Record<string, { brand: string; last4: string; outcome?: { code: string; decline_code?: string; message: string }; requiresAction?: boolean; processing?: boolean }> = {
  pm_card_visa: { brand: 'visa', last4: '4242' },
  pm_card_mastercard: { brand: 'mastercard', last4: '4444' },
  pm_card_chargeDeclined: { brand: 'visa', last4: '0002', outcome: { code: 'card_declined', decline_code: 'generic_decline', message: 'Your card was declined.' } },
  pm_card_chargeDeclinedInsufficientFunds: {
    brand: 'visa',
    last4: '9995',
    outcome: { code: 'card_declined', decline_code: 'insufficient_funds', message: 'Your card has insufficient funds.' },
  },
  pm_card_chargeDeclinedExpiredCard: { brand: 'visa', last4: '0069', outcome: { code: 'expired_card', message: 'Your card has expired.' } },
  pm_card_chargeDeclinedProcessingError: { brand: 'visa', last4: '0119', outcome: { code: 'processing_error', message: 'An error occurred while processing your card. Try again in a little bit.' } },
  pm_card_authenticationRequired: { brand: 'visa', last4: '3184', requiresAction: true },
  /** Not a Stripe token: an asynchronous method whose PaymentIntent stays `processing` (settled by a webhook). */
  pm_test_processing: { brand: 'visa', last4: '1111', processing: true },
};

export interface FakeStripe {
  /** `http://127.0.0.1:<port>`: STRIPE_API_BASE for the adapter. */
  readonly url: string;
  readonly customers: Map<string, Obj>;
  readonly paymentMethods: Map<string, Obj>;
  readonly paymentIntents: Map<string, Obj>;
  readonly refunds: Map<string, Obj>;
  /** Every request received: method, path, idempotency key, authorization. */
  readonly requests: Array<{ method: string; path: string; idempotencyKey: string | undefined; authorization: string | undefined; replayed: boolean }>;
  /** The next `times` requests (to `path`, with `idempotencyKey` when given) meet the fault. */
  fail(times: number, kind: FaultKind, opts?: { delayMs?: number; path?: string; idempotencyKey?: string }): void;
  clearFaults(): void;
  /** Changes an object behind the adapter's back (drift for reconciliation tests). */
  setPaymentIntentStatus(id: string, status: string): void;
  close(): Promise<void>;
}

/** Stripe's own parameter hashing is private; a canonical JSON of the parsed parameters is equivalent here. */
function fingerprint(method: string, path: string, params: Obj): string {
  const canon = (v: any): any => (v && typeof v === 'object' ? Object.fromEntries(Object.keys(v).sort().map((k) => [k, canon(v[k])])) : v);
  return createHash('sha256').update(`${method} ${path} ${JSON.stringify(canon(params))}`).digest('hex');
}

/** `a[b][c]=v` and `a[0]=v` → nested objects/arrays, as Stripe decodes them. */
export function decodeForm(body: string): Obj {
  const flat = parseQuery(body);
  const out: Obj = {};
  for (const [key, raw] of Object.entries(flat)) {
    const value = Array.isArray(raw) ? raw[raw.length - 1] : raw;
    const parts = key.replace(/\]/g, '').split('[');
    let node: any = out;
    parts.forEach((p, i) => {
      const last = i === parts.length - 1;
      const nextIsIndex = !last && /^\d+$/.test(parts[i + 1]!);
      if (last) node[p] = value;
      else node = node[p] ??= nextIsIndex ? [] : {};
    });
  }
  return out;
}

const id = (prefix: string) => `${prefix}_${randomBytes(12).toString('hex')}`;
const now = () => Math.floor(Date.now() / 1000);

class StripeFailure extends Error {
  constructor(
    readonly status: number,
    readonly error: Obj,
  ) {
    super(error.message);
  }
}
const invalid = (message: string, param?: string, code = 'parameter_invalid') => new StripeFailure(400, { type: 'invalid_request_error', code, message, param });
const missing = (what: string, key: string) =>
  new StripeFailure(404, { type: 'invalid_request_error', code: 'resource_missing', message: `No such ${what}: '${key}'`, param: 'id' });

export async function startFakeStripe(opts: { apiKey?: string } = {}): Promise<FakeStripe> {
  const apiKey = opts.apiKey ?? 'sk_test_fake';
  const customers = new Map<string, Obj>();
  const paymentMethods = new Map<string, Obj>();
  const paymentIntents = new Map<string, Obj>();
  const charges = new Map<string, Obj>();
  const refunds = new Map<string, Obj>();
  const idempotency = new Map<string, { fingerprint: string; status: number; body: string }>();
  const requests: FakeStripe['requests'] = [];
  let faults: Fault[] = [];

  const expandIntent = (pi: Obj, expand: string[] | undefined): Obj => {
    const copy = structuredClone(pi);
    if (expand?.includes('latest_charge') && pi.latest_charge) copy.latest_charge = structuredClone(charges.get(pi.latest_charge));
    return copy;
  };

  function confirm(pi: Obj): StripeFailure | undefined {
    const pm = paymentMethods.get(pi.payment_method);
    const spec = pm ? TEST_PAYMENT_METHODS[pm.metadata?.__token] : undefined;
    if (!pm || !spec) return invalid(`No such PaymentMethod: '${pi.payment_method}'`, 'payment_method', 'resource_missing');
    const chargeId = id('ch');
    const charge: Obj = {
      id: chargeId,
      object: 'charge',
      amount: pi.amount,
      amount_refunded: 0,
      currency: pi.currency,
      customer: pi.customer,
      payment_intent: pi.id,
      payment_method: pm.id,
      refunded: false,
      status: 'succeeded',
      failure_code: null,
      metadata: pi.metadata,
      created: now(),
    };
    if (spec.requiresAction) {
      // Off-session and the issuer wants 3-D Secure: Stripe answers 402 authentication_required.
      pi.status = 'requires_payment_method';
      pi.last_payment_error = { type: 'card_error', code: 'authentication_required', decline_code: 'authentication_required', message: 'Your card was declined. This transaction requires authentication.', payment_method: pm };
      return new StripeFailure(402, { ...pi.last_payment_error, payment_intent: structuredClone(pi) });
    }
    if (spec.outcome) {
      charge.status = 'failed';
      charge.failure_code = spec.outcome.code;
      charges.set(chargeId, charge);
      pi.latest_charge = chargeId;
      pi.status = 'requires_payment_method';
      pi.last_payment_error = { type: 'card_error', charge: chargeId, ...spec.outcome, payment_method: pm };
      return new StripeFailure(402, { ...pi.last_payment_error, payment_intent: structuredClone(pi) });
    }
    charge.status = spec.processing ? 'pending' : 'succeeded';
    charges.set(chargeId, charge);
    pi.latest_charge = chargeId;
    pi.status = spec.processing ? 'processing' : 'succeeded';
    pi.amount_received = spec.processing ? 0 : pi.amount;
    return undefined;
  }

  /** The API itself: returns [status, body] or throws StripeFailure. */
  function route(method: string, path: string, params: Obj): [number, Obj] {
    let m: RegExpMatchArray | null;
    if (method === 'POST' && path === '/v1/customers') {
      const c = { id: id('cus'), object: 'customer', email: params.email ?? null, name: params.name ?? null, metadata: params.metadata ?? {}, invoice_settings: { default_payment_method: null }, created: now(), livemode: false };
      customers.set(c.id, c);
      return [200, c];
    }
    if (method === 'POST' && (m = path.match(/^\/v1\/customers\/([^/]+)$/))) {
      const c = customers.get(m[1]!);
      if (!c) throw missing('customer', m[1]!);
      const pm = params.invoice_settings?.default_payment_method;
      if (pm !== undefined) {
        if (!paymentMethods.get(pm) || paymentMethods.get(pm)!.customer !== c.id) throw invalid(`The payment method '${pm}' is not attached to this customer`, 'invoice_settings[default_payment_method]');
        c.invoice_settings.default_payment_method = pm;
      }
      if (params.metadata) c.metadata = { ...c.metadata, ...params.metadata };
      return [200, c];
    }
    if (method === 'POST' && (m = path.match(/^\/v1\/payment_methods\/([^/]+)\/attach$/))) {
      const token = m[1]!;
      const spec = TEST_PAYMENT_METHODS[token];
      if (!spec) throw missing('payment_method', token);
      if (!params.customer) throw invalid('Missing required param: customer.', 'customer', 'parameter_missing');
      if (!customers.has(params.customer)) throw missing('customer', params.customer);
      // Test tokens stand for a fresh card each time they are attached, as on Stripe.
      const pm = { id: id('pm'), object: 'payment_method', type: 'card', customer: params.customer, card: { brand: spec.brand, last4: spec.last4, exp_month: 12, exp_year: 2034 }, metadata: { __token: token }, created: now() };
      paymentMethods.set(pm.id, pm);
      return [200, { ...pm, metadata: {} }];
    }
    if (method === 'POST' && path === '/v1/payment_intents') {
      const amount = Number(params.amount);
      if (!Number.isInteger(amount) || amount < 1) throw invalid('This value must be greater than or equal to 1.', 'amount');
      if (!params.currency) throw invalid('Missing required param: currency.', 'currency', 'parameter_missing');
      if (params.customer && !customers.has(params.customer)) throw missing('customer', params.customer);
      const pi: Obj = {
        id: id('pi'),
        object: 'payment_intent',
        amount,
        amount_received: 0,
        currency: String(params.currency).toLowerCase(),
        customer: params.customer ?? null,
        description: params.description ?? null,
        metadata: params.metadata ?? {},
        payment_method: params.payment_method ?? null,
        status: 'requires_confirmation',
        latest_charge: null,
        last_payment_error: null,
        created: now(),
        livemode: false,
      };
      paymentIntents.set(pi.id, pi);
      if (params.confirm === 'true') {
        const failure = confirm(pi);
        if (failure) throw failure;
      }
      return [200, expandIntent(pi, params.expand)];
    }
    if (method === 'GET' && (m = path.match(/^\/v1\/payment_intents\/([^/]+)$/))) {
      const pi = paymentIntents.get(m[1]!);
      if (!pi) throw missing('payment_intent', m[1]!);
      return [200, expandIntent(pi, params.expand)];
    }
    if (method === 'POST' && path === '/v1/refunds') {
      const pi = paymentIntents.get(params.payment_intent);
      if (!pi) throw missing('payment_intent', params.payment_intent);
      const charge = pi.latest_charge ? charges.get(pi.latest_charge) : undefined;
      if (!charge || pi.status !== 'succeeded') throw invalid(`This PaymentIntent (${pi.id}) does not have a successful charge to refund.`, 'payment_intent', 'charge_not_refundable');
      const amount = params.amount !== undefined ? Number(params.amount) : charge.amount - charge.amount_refunded;
      if (!Number.isInteger(amount) || amount < 1 || amount > charge.amount - charge.amount_refunded) {
        throw invalid(`Refund amount (${amount}) is greater than unrefunded amount on charge (${charge.amount - charge.amount_refunded})`, 'amount', 'amount_too_large');
      }
      charge.amount_refunded += amount;
      charge.refunded = charge.amount_refunded === charge.amount;
      const r = { id: id('re'), object: 'refund', amount, charge: charge.id, payment_intent: pi.id, currency: pi.currency, status: 'succeeded', metadata: params.metadata ?? {}, created: now() };
      refunds.set(r.id, r);
      return [200, r];
    }
    throw new StripeFailure(404, { type: 'invalid_request_error', message: `Unrecognized request URL (${method}: ${path}).` });
  }

  const send = (res: ServerResponse, status: number, body: string, headers: Record<string, string> = {}) => {
    res.writeHead(status, { 'content-type': 'application/json', 'request-id': id('req'), ...headers });
    res.end(body);
  };

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    const url = new URL(req.url ?? '/', 'http://x');
    const method = req.method ?? 'GET';
    const params = method === 'GET' ? decodeForm(url.search.slice(1)) : decodeForm(Buffer.concat(chunks).toString('utf8'));
    const key = typeof req.headers['idempotency-key'] === 'string' ? req.headers['idempotency-key'] : undefined;
    const authorization = req.headers.authorization;
    const entry = { method, path: url.pathname, idempotencyKey: key, authorization, replayed: false };
    requests.push(entry);

    const fault = faults.find((f) => f.remaining > 0 && (!f.path || url.pathname.startsWith(f.path)) && (!f.idempotencyKey || f.idempotencyKey === key));
    if (fault) fault.remaining--;
    if (fault?.kind === 'reset') return void req.socket.destroy();
    if (fault?.kind === 'http500') return send(res, 500, JSON.stringify({ error: { type: 'api_error', message: 'An unknown error occurred' } }));
    if (fault?.kind === 'rate_limit') return send(res, 429, JSON.stringify({ error: { type: 'invalid_request_error', code: 'rate_limit', message: 'Too many requests' } }));

    if (authorization !== `Bearer ${apiKey}`) {
      return send(res, 401, JSON.stringify({ error: { type: 'invalid_request_error', message: 'Invalid API Key provided' } }));
    }

    let status: number;
    let body: string;
    const print = method === 'POST' && key ? fingerprint(method, url.pathname, params) : undefined;
    const stored = print && key ? idempotency.get(key) : undefined;
    if (stored && stored.fingerprint !== print) {
      status = 400;
      body = JSON.stringify({
        error: { type: 'idempotency_error', message: `Keys for idempotent requests can only be used with the same parameters they were first used with. Try using a key other than '${key}' if you meant to execute a different request.` },
      });
    } else if (stored) {
      entry.replayed = true;
      if (fault?.kind === 'delay') await new Promise((r) => setTimeout(r, fault.delayMs));
      if (fault?.kind === 'reset_after_work') return void req.socket.destroy();
      return send(res, stored.status, stored.body, { 'idempotent-replayed': 'true', 'idempotency-key': key! });
    } else {
      try {
        const [s, obj] = route(method, url.pathname, params);
        status = s;
        body = JSON.stringify(obj);
      } catch (err) {
        if (!(err instanceof StripeFailure)) throw err;
        status = err.status;
        body = JSON.stringify({ error: err.error });
      }
      // Stripe stores the result of a request that ran (including 4xx from validation and card errors),
      // not a 500 it did not finish; conflicting concurrent use answers 409 (not needed here).
      if (print && key && status < 500) idempotency.set(key, { fingerprint: print, status, body });
    }
    // The work is done and recorded; the answer is lost or late (a timeout at the client).
    if (fault?.kind === 'delay') await new Promise((r) => setTimeout(r, fault.delayMs));
    if (fault?.kind === 'reset_after_work') return void req.socket.destroy();
    send(res, status, body, key ? { 'idempotency-key': key } : {});
  }

  const server: Server = createServer((req, res) => {
    handle(req, res).catch((err) => {
      if (!res.headersSent) send(res, 500, JSON.stringify({ error: { type: 'api_error', message: String(err) } }));
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;

  return {
    url: `http://127.0.0.1:${port}`,
    customers,
    paymentMethods,
    paymentIntents,
    refunds,
    requests,
    fail(times, kind, o = {}) {
      faults.push({ kind, remaining: times, delayMs: o.delayMs ?? 1_000, path: o.path, idempotencyKey: o.idempotencyKey });
    },
    clearFaults() {
      faults = [];
    },
    setPaymentIntentStatus(piId, s) {
      const pi = paymentIntents.get(piId);
      if (!pi) throw new Error(`no ${piId}`);
      pi.status = s;
      if (s === 'succeeded') {
        pi.amount_received = pi.amount;
        const ch = pi.latest_charge && charges.get(pi.latest_charge);
        if (ch) ch.status = 'succeeded';
      }
    },
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
