import { AsyncLocalStorage } from 'node:async_hooks';

/**
 * Everything a request carries through its async calls, in ONE AsyncLocalStorage. With several stores
 * (read session, unit of work, flag exposures, event context, the unit of work's current tenant) Node
 * copied each of them onto every promise the request created; one store costs one copy. Each layer owns
 * its field and reads and replaces only that one (the accessors live beside the layer: read-session.ts,
 * unit-of-work.ts, flags.ts, event-context.ts). A nested run copies the enclosing context and replaces
 * one field, so it behaves exactly as nested independent stores did: the other fields are inherited, and
 * the mutable ones (the unit-of-work slot, the read session, the exposures) are the same objects.
 */
export interface RequestContext {
  /** read-session.ts: who reads, for read-your-writes. */
  readSession?: unknown;
  /** unit-of-work.ts: the request's slot (`{ uow? }`), mutable: the idempotency layer installs one later. */
  uowSlot?: unknown;
  /** unit-of-work.ts: the tenant of the unit of work's call running now. */
  uowTenant?: string;
  /** flags.ts: the flags exposed to this request. */
  exposures?: unknown;
  /** outbox/event-context.ts: request id and trace context that events carry into their handlers. */
  event?: unknown;
}

const storage = new AsyncLocalStorage<RequestContext>();

export function currentRequestContext(): RequestContext | undefined {
  return storage.getStore();
}

/** Runs fn with a whole new context (a request's start). */
export function runInRequestContext<T>(ctx: RequestContext, fn: () => T): T {
  return storage.run(ctx, fn);
}

/** Runs fn in the current context with one field replaced (the others inherited). */
export function runWithContextField<K extends keyof RequestContext, T>(key: K, value: RequestContext[K], fn: () => T): T {
  const cur = storage.getStore();
  const next: RequestContext = cur ? { ...cur } : {};
  next[key] = value;
  return storage.run(next, fn);
}
