import type { Static, TObject } from '@sinclair/typebox';
import type { TxHandle } from '../../platform/db/database.ts';
import type { UrlPolicy } from '../../platform/net/url-policy.ts';

/** One outbox event as a connector sees it (the envelope, minus transport details). */
export interface ConnectorEvent {
  id: string;
  name: string;
  tenantId: string;
  occurredAt: string;
  payload: Record<string, unknown>;
}

export interface DeliverContext {
  tenantId: string;
  connectionId: string;
  /** Fires when the policy's timeout elapses: pass it to the vendor call. */
  signal: AbortSignal;
  urlRules: UrlPolicy;
  /**
   * Who these users are now, in this tenant: their address and name, and their role in the org (null when
   * no longer a member). A user the platform no longer knows (deleted, erased) is absent: send nothing about them.
   * Events carry ids only; this is the one place a connector gets personal data, at delivery time.
   */
  people(userIds: string[]): Promise<ReadonlyMap<string, Person>>;
}

export interface Person {
  email: string;
  name: string;
  /** The role in the connection's org, or null when not (or no longer) a member. */
  role: string | null;
}

/** Resolves people in the sender's transaction (the tenant's context; the embedded database has one connection). */
export type PeopleLookup = (trx: TxHandle, tenantId: string, userIds: string[]) => Promise<ReadonlyMap<string, Person>>;

/**
 * An integration: a small adapter the framework drives. It declares what an org configures (a TypeBox
 * schema for the plain settings and one for the credentials, which are stored encrypted and never read
 * back), which outbox events it consumes, and how a batch of them maps onto the vendor's API. Retries,
 * breakers, concurrency limits, dead letters, health and backfill are the framework's, not the adapter's.
 */
export interface Connector<C extends TObject = TObject, S extends TObject = TObject> {
  /** Stable id, stored on the connection: `posthog`, `segment`, `http`. */
  name: string;
  description: string;
  config: C;
  credentials: S;
  /** Event names the connector can consume; a connection subscribes to a subset. */
  events: readonly string[];
  /** Most events per vendor call (the framework claims up to this many pending deliveries at once). */
  maxBatch: number;
  /** Checks beyond the schema (e.g. a host against the URL rules); a sentence for the 400, or null. */
  validate?(config: Static<C>, rules: UrlPolicy): Promise<string | null>;
  /**
   * Sends the batch; resolves when the vendor accepted all of it. Throw `ConnectorError` (or any error
   * with `status` / `retryAfterMs`, as vendor SDKs do) on failure: the framework classifies it.
   */
  deliver(batch: ConnectorEvent[], config: Static<C>, credentials: Static<S>, ctx: DeliverContext): Promise<void>;
  /** Vendor webhooks into Plinth (optional): the vendor's signature scheme and how a body splits into events. */
  inbound?: {
    /** Checked before anything is stored; false → 401. */
    verify(credentials: Static<S>, req: InboundRequest): boolean;
    /** One entry per vendor event; `key` (the vendor's event id) deduplicates per connection. */
    split(body: unknown): Array<{ key: string; type: string; payload: Record<string, unknown> }>;
  };
}

/** An inbound webhook request as the vendor sent it (the raw body, for signatures). */
export interface InboundRequest {
  method: string;
  /** The full URL the vendor called (PUBLIC_URL + path and query). */
  url: string;
  rawBody: string;
  headers: Record<string, string | string[] | undefined>;
  now?: number;
}

/** A vendor call failed: `status` (HTTP) decides permanent (4xx) or transient (408/429/5xx/network). */
export class ConnectorError extends Error {
  override name = 'ConnectorError';
  constructor(
    message: string,
    readonly status?: number,
    /** From the vendor's Retry-After: no call to this connection before it elapses. */
    readonly retryAfterMs?: number,
  ) {
    super(message);
  }
}

/** Retry-After as seconds or an HTTP date, in ms (undefined when absent or unreadable). */
export function parseRetryAfter(value: string | null | undefined, now = Date.now()): number | undefined {
  if (!value) return undefined;
  if (/^\d+$/.test(value.trim())) return Number(value.trim()) * 1000;
  const at = Date.parse(value);
  return Number.isNaN(at) ? undefined : Math.max(0, at - now);
}

/**
 * Top-level payload keys that never reach a connector nor the deliveries table (fan-out drops them): an
 * invitation's e-mail and accept token, for instance. A connector that needs a person's address resolves it
 * at delivery time (see the HubSpot contacts).
 */
export const PRIVATE_KEYS: ReadonlySet<string> = new Set(['email', 'token', 'secret', 'password']);
export const redactPayload = (payload: Record<string, unknown>): Record<string, unknown> => Object.fromEntries(Object.entries(payload).filter(([k]) => !PRIVATE_KEYS.has(k)));

/** A connector with its schema types erased, as the framework's registry holds it. */
export type AnyConnector = Connector<TObject, TObject>;

export function defineConnector<C extends TObject, S extends TObject>(c: Connector<C, S>): AnyConnector {
  return c as unknown as AnyConnector;
}

/** The key purpose connection credentials are sealed under (derived from WEBHOOK_SECRET_KEY; see secret-box.ts). */
export const CREDENTIALS_PURPOSE = 'integrations.credentials';
