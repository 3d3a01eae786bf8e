import { currentRequestContext, runWithContextField } from '../request-context.ts';

/** What travels with an event from the request that caused it into its handlers (and their logs). */
export interface EventContext {
  requestId?: string;
  /** W3C trace context (`00-<trace-id>-<span-id>-<flags>`). */
  traceparent?: string;
}

/**
 * How the current context is captured when an event is added and restored around its handlers.
 * The default keeps the request id and the incoming `traceparent` in AsyncLocalStorage; the
 * observability layer replaces it (setContextPropagator) to capture and restore OpenTelemetry spans.
 */
export interface ContextPropagator {
  capture(): EventContext;
  restore<T>(ctx: EventContext, fn: () => T): T;
}

const current = () => currentRequestContext()?.event as EventContext | undefined;

export const defaultPropagator: ContextPropagator = {
  capture: () => ({ ...(current() ?? {}) }),
  restore: (ctx, fn) => runWithContextField('event', { ...ctx }, fn),
};

let propagator: ContextPropagator = defaultPropagator;

export function setContextPropagator(next: ContextPropagator): void {
  propagator = next;
}

export function captureEventContext(): EventContext {
  return propagator.capture();
}

export function runInEventContext<T>(ctx: EventContext, fn: () => T): T {
  return propagator.restore(ctx, fn);
}

/** The context visible to code running inside a request or a handler (default propagator). */
export function currentEventContext(): EventContext {
  return current() ?? {};
}

const TRACEPARENT = /^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$/;

/** A syntactically valid traceparent header value, or undefined (never trust a client's malformed one). */
export function parseTraceparent(value: unknown): string | undefined {
  return typeof value === 'string' && TRACEPARENT.test(value) ? value : undefined;
}
