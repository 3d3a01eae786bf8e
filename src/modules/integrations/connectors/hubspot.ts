import { createHmac, timingSafeEqual } from 'node:crypto';
// The SDK (≈ 15 MB of RSS) is imported when a batch is delivered, not when the app starts.
import { Type } from '@sinclair/typebox';
import { ConnectorError, defineConnector, parseRetryAfter, type ConnectorEvent, type InboundRequest, type Person } from '../integrations.connector.ts';
import { BILLING_SUBSCRIPTION_EVENTS, TENANCY_MEMBER_EVENTS } from '../integrations.events.ts';
import { outboundUrlProblem } from '../../../platform/net/url-policy.ts';

/** Custom properties the HubSpot portal needs (unique-value properties): the Plinth ids records are keyed by. */
export const HUBSPOT_ID_PROPERTIES = { company: 'plinth_org_id', deal: 'plinth_subscription_id' } as const;
/** Contact properties the portal needs (plain text; contacts are keyed by HubSpot's own unique `email`). */
export const HUBSPOT_CONTACT_PROPERTIES = { userId: 'plinth_user_id', role: 'plinth_role' } as const;

/** The members a batch is about (tenancy's member events carry the user id only), each once. */
export function memberIds(batch: ConnectorEvent[]): string[] {
  const ids = batch.filter((e) => e.name.startsWith('tenancy.member_')).map((e) => e.payload.userId);
  return [...new Set(ids.filter((id): id is string => typeof id === 'string'))];
}

/** One contact upsert input, keyed by e-mail: the person as they are now (role '' once they left the org). */
export function contactInput(userId: string, person: Person) {
  const [first, ...rest] = person.name.trim().split(/\s+/);
  return {
    idProperty: 'email',
    id: person.email,
    properties: {
      email: person.email,
      firstname: first ?? '',
      lastname: rest.join(' '),
      [HUBSPOT_CONTACT_PROPERTIES.userId]: userId,
      [HUBSPOT_CONTACT_PROPERTIES.role]: person.role ?? '',
    },
  };
}

/** Billing's subscription event payload as the deal sees it (see BILLING_SUBSCRIPTION_EVENTS). */
interface SubscriptionPayload {
  subscriptionId?: unknown;
  planKey?: unknown;
  status?: unknown;
  amountMinor?: unknown;
  currency?: unknown;
  currencyExponent?: unknown;
}

export function dealStage(eventName: string, status: unknown): string {
  if (eventName === 'billing.subscription_canceled' || status === 'canceled') return 'closedlost';
  return status === 'active' ? 'closedwon' : 'qualifiedtobuy';
}

/** The newest state of each subscription in the batch (events arrive oldest first): one upsert input each. */
export function dealInputs(batch: ConnectorEvent[]) {
  const latest = new Map<string, ConnectorEvent>();
  for (const e of batch) {
    const id = (e.payload as SubscriptionPayload).subscriptionId;
    if (typeof id === 'string') latest.set(id, e);
  }
  return [...latest.entries()].map(([id, e]) => {
    const p = e.payload as SubscriptionPayload;
    const exponent = typeof p.currencyExponent === 'number' ? p.currencyExponent : 2;
    const amount = typeof p.amountMinor === 'number' ? (p.amountMinor / 10 ** exponent).toFixed(exponent) : '0';
    return {
      idProperty: HUBSPOT_ID_PROPERTIES.deal,
      id,
      properties: {
        [HUBSPOT_ID_PROPERTIES.deal]: id,
        dealname: `Plinth ${typeof p.planKey === 'string' ? p.planKey : 'subscription'}`,
        amount,
        deal_currency_code: typeof p.currency === 'string' ? p.currency : 'USD',
        dealstage: dealStage(e.name, p.status),
        pipeline: 'default',
      },
    };
  });
}

/** HubSpot's v3 request signature: base64 HMAC-SHA256(client secret, method + URL + body + timestamp), at most 5 minutes old. */
export function hubspotSignatureV3(secret: string, method: string, url: string, body: string, timestamp: string): string {
  return createHmac('sha256', secret).update(`${method}${url}${body}${timestamp}`).digest('base64');
}

export function verifyHubspotV3(secret: string, req: InboundRequest): boolean {
  const header = (name: string) => {
    const v = req.headers[name];
    return Array.isArray(v) ? v[0] : v;
  };
  const timestamp = header('x-hubspot-request-timestamp');
  const signature = header('x-hubspot-signature-v3');
  if (!timestamp || !signature || !/^\d{10,16}$/.test(timestamp)) return false;
  if (Math.abs((req.now ?? Date.now()) - Number(timestamp)) > 5 * 60_000) return false;
  const expected = Buffer.from(hubspotSignatureV3(secret, req.method, req.url, req.rawBody, timestamp));
  const got = Buffer.from(signature);
  return got.length === expected.length && timingSafeEqual(got, expected);
}

/** The SDK's ApiException carries `code` and the response headers: the framework reads status + Retry-After. */
function vendorError(err: unknown): unknown {
  const e = err as { code?: unknown; headers?: Record<string, string> };
  if (typeof e?.code !== 'number') return err;
  return new ConnectorError(`HubSpot answered ${e.code}`, e.code, parseRetryAfter(e.headers?.['retry-after']));
}

/**
 * HubSpot CRM (@hubspot/api-client): the organization as a company, billing's subscriptions as deals
 * (amount, stage) and members as contacts, each associated with the company. Idempotent: batch upserts
 * keyed by Plinth ids stored in unique custom properties (contacts by their e-mail, HubSpot's own key), so
 * a retried or replayed batch updates the same records.
 *
 * Contacts are synchronised to the member's state at delivery time, not to the event: member events carry
 * the user id only, and the address, name and current role come from `ctx.people` (the identity/tenancy
 * facades, inside the tenant). A member → contact with `plinth_role` and a contact→company association; a
 * former member → `plinth_role` '' and the association removed; a user the platform no longer knows (deleted,
 * erased) → nothing is sent. Out-of-order or replayed events therefore converge on the current state.
 */
export const hubspotConnector = defineConnector({
  name: 'hubspot',
  description: 'CRM: organization → company, subscriptions → deals (amount, stage), members → contacts, associated with it',
  config: Type.Object({ basePath: Type.Optional(Type.String({ maxLength: 500, description: 'default https://api.hubapi.com' })) }, { additionalProperties: false }),
  credentials: Type.Object(
    {
      accessToken: Type.String({ minLength: 1, maxLength: 500, description: 'private app token' }),
      clientSecret: Type.Optional(Type.String({ minLength: 1, maxLength: 500, description: 'app client secret: verifies inbound webhooks (v3)' })),
    },
    { additionalProperties: false },
  ),
  events: [...BILLING_SUBSCRIPTION_EVENTS, ...TENANCY_MEMBER_EVENTS],
  maxBatch: 50,
  validate: async (config, rules) => (config.basePath ? outboundUrlProblem(config.basePath, rules).then((p) => p && `basePath ${p}`) : null),
  inbound: {
    verify: (credentials, req) => (credentials.clientSecret ? verifyHubspotV3(credentials.clientSecret, req) : false),
    // HubSpot posts an array of events: { eventId, subscriptionType: 'deal.propertyChange', objectId, propertyName, propertyValue, occurredAt, portalId, … }
    split: (body) =>
      (Array.isArray(body) ? body : []).map((e: Record<string, unknown>) => ({
        key: String(e.eventId ?? `${String(e.subscriptionType)}:${String(e.objectId)}:${String(e.occurredAt)}`),
        type: String(e.subscriptionType ?? 'unknown'),
        payload: e,
      })),
  },
  async deliver(batch, config, credentials, ctx) {
    const basePath = config.basePath ?? 'https://api.hubapi.com';
    const problem = await outboundUrlProblem(basePath, ctx.urlRules);
    if (problem) throw new ConnectorError(`basePath ${problem}`, 400);
    const { Client } = await import('@hubspot/api-client');
    const hubspot = new Client({ accessToken: credentials.accessToken, basePath, numberOfApiCallRetries: 0 });
    try {
      const company = await hubspot.crm.companies.batchApi.upsert({
        inputs: [{ idProperty: HUBSPOT_ID_PROPERTIES.company, id: ctx.tenantId, properties: { [HUBSPOT_ID_PROPERTIES.company]: ctx.tenantId } }],
      });
      const companyId = company.results[0]!.id;
      const inputs = dealInputs(batch);
      if (inputs.length > 0) {
        const deals = await hubspot.crm.deals.batchApi.upsert({ inputs });
        for (const deal of deals.results) await hubspot.crm.associations.v4.basicApi.createDefault('deals', deal.id, 'companies', companyId);
      }
      const members = memberIds(batch);
      if (members.length === 0) return;
      const people = await ctx.people(members);
      const known = members.filter((id) => people.has(id));
      if (known.length === 0) return;
      const contacts = await hubspot.crm.contacts.batchApi.upsert({ inputs: known.map((id) => contactInput(id, people.get(id)!)) });
      for (const contact of contacts.results) {
        const userId = contact.properties[HUBSPOT_CONTACT_PROPERTIES.userId] ?? known.find((id) => people.get(id)!.email === contact.properties.email);
        const person = userId ? people.get(userId) : undefined;
        if (!person) continue;
        if (person.role) await hubspot.crm.associations.v4.basicApi.createDefault('contacts', contact.id, 'companies', companyId);
        else await hubspot.crm.associations.v4.basicApi.archive('contacts', contact.id, 'companies', companyId);
      }
    } catch (err) {
      throw vendorError(err);
    }
  },
});
