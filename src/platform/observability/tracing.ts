import {
  context,
  isSpanContextValid,
  propagation,
  ROOT_CONTEXT,
  SpanKind,
  SpanStatusCode,
  trace,
  type Attributes,
  type Context,
  type Span,
} from '@opentelemetry/api';
import { observeJob } from './metrics.ts';

/**
 * Tracing helpers on the OpenTelemetry API only. Without a started SDK (OTEL_* unset) every call here
 * is the API's no-op: no spans, no ids, next to no cost. The SDK itself lives in tracing-sdk.ts and is
 * loaded only when configured (see tracing-register.ts).
 */
const tracer = trace.getTracer('plinth');

/** W3C trace context of the active span, to store with work that continues elsewhere (outbox rows). */
export function currentTraceparent(): string | undefined {
  const carrier: Record<string, string> = {};
  propagation.inject(context.active(), carrier);
  return carrier.traceparent;
}

/** Adds `traceparent` (and `tracestate`) of the active span to outgoing headers. */
export function injectTraceHeaders(headers: Record<string, string>): Record<string, string> {
  propagation.inject(context.active(), headers);
  return headers;
}

/** The context a stored `traceparent` describes (the root context when there is none or it is invalid). */
export function contextFromTraceparent(traceparent: string | null | undefined): Context {
  if (!traceparent) return ROOT_CONTEXT;
  return propagation.extract(ROOT_CONTEXT, { traceparent });
}

/** Ids of the active span, for log lines; undefined when nothing is traced. */
export function activeTraceIds(): { traceId: string; spanId: string } | undefined {
  const span = trace.getSpan(context.active());
  if (!span) return undefined;
  const sc = span.spanContext();
  return isSpanContextValid(sc) ? { traceId: sc.traceId, spanId: sc.spanId } : undefined;
}

export interface SpanOptions {
  kind?: SpanKind;
  attributes?: Attributes;
  /** Parent context; defaults to the active one. */
  parent?: Context;
}

/**
 * Runs fn inside a new active span (children and logs see it); records a thrown error and ends the
 * span either way. Use for outbound calls that no instrumentation covers and for units of work.
 */
export function withSpan<T>(name: string, opts: SpanOptions, fn: (span: Span) => Promise<T>): Promise<T> {
  return tracer.startActiveSpan(name, { kind: opts.kind, attributes: opts.attributes }, opts.parent ?? context.active(), async (span) => {
    try {
      return await fn(span);
    } catch (err) {
      span.recordException(err as Error);
      span.setStatus({ code: SpanStatusCode.ERROR, message: err instanceof Error ? err.name : 'error' });
      throw err;
    } finally {
      span.end();
    }
  });
}

export interface JobTrace {
  /** Queue (low cardinality: a metric label). */
  queue: string;
  /** Event or job name, e.g. 'projects.task_created'. */
  name: string;
  /** The traceparent stored with the job (outbox row); the job span continues that trace. */
  traceparent?: string | null;
  attempt?: number;
}

/**
 * Wraps one job attempt: a CONSUMER span that continues the trace the job was created in (request →
 * outbox → job is one trace), and the `plinth_job_duration_seconds` observation by outcome.
 */
export async function instrumentJob<T>(job: JobTrace, fn: () => Promise<T>): Promise<T> {
  const started = performance.now();
  let outcome: 'success' | 'failure' = 'failure';
  try {
    const result = await withSpan(
      `${job.queue} process`,
      {
        kind: SpanKind.CONSUMER,
        parent: contextFromTraceparent(job.traceparent),
        attributes: {
          'messaging.system': 'plinth',
          'messaging.operation.type': 'process',
          'messaging.destination.name': job.queue,
          'plinth.job.name': job.name,
          ...(job.attempt !== undefined ? { 'plinth.job.attempt': job.attempt } : {}),
        },
      },
      () => fn(),
    );
    outcome = 'success';
    return result;
  } finally {
    observeJob(job.queue, outcome, (performance.now() - started) / 1000);
  }
}

/** What the outbox captures with an event and restores around its handlers (outbox/event-context.ts). */
export interface TraceCarrier {
  requestId?: string;
  traceparent?: string;
}
export interface CarrierPropagator {
  capture(): TraceCarrier;
  restore<T>(ctx: TraceCarrier, fn: () => T): T;
}

/**
 * Wraps the outbox's context propagator with OpenTelemetry: an event added inside a traced request
 * stores the traceparent of the span active at that moment (not just the caller's header), and
 * restoring makes the stored context active when no span is (a job span from instrumentJob, or the
 * request's own span, stays in charge).
 */
export function otelEventContext(base: CarrierPropagator): CarrierPropagator {
  return {
    capture() {
      const ctx = base.capture();
      const traceparent = currentTraceparent();
      return traceparent ? { ...ctx, traceparent } : ctx;
    },
    restore(ctx, fn) {
      if (!ctx.traceparent || trace.getSpan(context.active())) return base.restore(ctx, fn);
      return context.with(contextFromTraceparent(ctx.traceparent), () => base.restore(ctx, fn));
    },
  };
}

let shutdownHook: (() => Promise<void>) | undefined;

/** Set by the SDK when it starts, so the lifecycle can flush spans on shutdown without importing it. */
export function setTracingShutdown(fn: (() => Promise<void>) | undefined): void {
  shutdownHook = fn;
}

/** Flushes and stops the tracing SDK if one is running (a no-op otherwise). */
export async function shutdownTracing(): Promise<void> {
  const fn = shutdownHook;
  shutdownHook = undefined;
  if (fn) await fn();
}

export function tracingActive(): boolean {
  return shutdownHook !== undefined;
}

export { SpanKind };
