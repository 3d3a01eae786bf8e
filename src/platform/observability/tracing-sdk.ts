import { FastifyOtelInstrumentation } from '@fastify/otel';
import { OTLPTraceExporter } from '@opentelemetry/exporter-trace-otlp-proto';
import { registerInstrumentations } from '@opentelemetry/instrumentation';
import { HttpInstrumentation } from '@opentelemetry/instrumentation-http';
import { IORedisInstrumentation } from '@opentelemetry/instrumentation-ioredis';
import { PgInstrumentation } from '@opentelemetry/instrumentation-pg';
import { UndiciInstrumentation } from '@opentelemetry/instrumentation-undici';
import { detectResources, envDetector, resourceFromAttributes } from '@opentelemetry/resources';
import {
  BatchSpanProcessor,
  ConsoleSpanExporter,
  NodeTracerProvider,
  SimpleSpanProcessor,
  type SpanExporter,
} from '@opentelemetry/sdk-trace-node';
import { ConfigError } from '../config.ts';
import { defaultPropagator, setContextPropagator } from '../outbox/event-context.ts';
import { otelEventContext, setTracingShutdown } from './tracing.ts';

type Env = Record<string, string | undefined>;

/** Operational endpoints produce no spans: they are polled constantly and say nothing about users. */
const UNTRACED_PATHS = new Set(['/metrics', '/livez', '/readyz']);

function pathOf(url: string | undefined): string {
  const u = url ?? '/';
  const q = u.indexOf('?');
  return q === -1 ? u : u.slice(0, q);
}

function exportersFromEnv(env: Env, names: string[]): SpanExporter[] {
  const wanted = names.length > 0 ? names : ['otlp'];
  return wanted.map((name) => {
    if (name === 'console') return new ConsoleSpanExporter();
    if (name !== 'otlp') throw new ConfigError('OTEL_TRACES_EXPORTER', `must be otlp, console or none (got "${name}")`);
    const protocol = (env.OTEL_EXPORTER_OTLP_TRACES_PROTOCOL ?? env.OTEL_EXPORTER_OTLP_PROTOCOL ?? 'http/protobuf').trim();
    if (protocol !== 'http/protobuf') {
      throw new ConfigError('OTEL_EXPORTER_OTLP_PROTOCOL', `must be http/protobuf, the protocol Plinth ships (got "${protocol}")`);
    }
    // Reads OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT, _HEADERS, _TIMEOUT, _COMPRESSION itself.
    return new OTLPTraceExporter();
  });
}

export interface TracingOptions {
  env?: Env;
  /** OTEL_TRACES_EXPORTER, parsed (tracing-config.ts); empty = otlp. */
  exporterNames?: string[];
  /** Replaces the exporters chosen by OTEL_TRACES_EXPORTER (tests pass an InMemorySpanExporter). */
  exporter?: SpanExporter;
  /** Export each span as it ends instead of in batches (tests). */
  simple?: boolean;
}

export interface TracingHandle {
  provider: NodeTracerProvider;
  shutdown(): Promise<void>;
}

/**
 * Starts the SDK: tracer provider (W3C trace context propagator, AsyncLocalStorage context manager),
 * sampler from OTEL_TRACES_SAMPLER[_ARG] (default parent-based always-on), resource from
 * OTEL_SERVICE_NAME / OTEL_RESOURCE_ATTRIBUTES, and instrumentation of incoming and outgoing HTTP
 * (http, fetch/undici), Fastify routes and hooks, pg and ioredis. Must run before those modules load.
 */
export function startTracing(opts: TracingOptions = {}): TracingHandle {
  const env = opts.env ?? process.env;
  const exporters = opts.exporter ? [opts.exporter] : exportersFromEnv(env, opts.exporterNames ?? []);
  const resource = resourceFromAttributes({ 'service.name': 'plinth' }).merge(detectResources({ detectors: [envDetector] }));
  const provider = new NodeTracerProvider({
    resource,
    spanProcessors: exporters.map((e) => (opts.simple ? new SimpleSpanProcessor(e) : new BatchSpanProcessor(e))),
  });
  provider.register();
  const unregister = registerInstrumentations({
    tracerProvider: provider,
    instrumentations: [
      new HttpInstrumentation({
        ignoreIncomingRequestHook: (req) => UNTRACED_PATHS.has(pathOf(req.url)),
      }),
      new UndiciInstrumentation(),
      // Statement text only; parameter values are never recorded (enhancedDatabaseReporting stays off).
      // Queries outside any traced work (health pings, pollers) would each start a one-span trace.
      new PgInstrumentation({ enhancedDatabaseReporting: false, requireParentSpan: true }),
      new IORedisInstrumentation({ requireParentSpan: true }),
      new FastifyOtelInstrumentation({
        registerOnInitialization: true,
        ignorePaths: (route) => UNTRACED_PATHS.has(pathOf(route.url)),
      }),
    ],
  });
  // Events added in a traced request store the active span's traceparent (outbox/event-context.ts).
  setContextPropagator(otelEventContext(defaultPropagator));
  const handle: TracingHandle = {
    provider,
    async shutdown() {
      setContextPropagator(defaultPropagator);
      unregister();
      await provider.shutdown();
    },
  };
  setTracingShutdown(handle.shutdown);
  return handle;
}
