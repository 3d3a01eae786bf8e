import { createServer, type IncomingHttpHeaders, type Server } from 'node:http';
import { Writable } from 'node:stream';
import { SpanKind } from '@opentelemetry/api';
import { InMemorySpanExporter, type ReadableSpan } from '@opentelemetry/sdk-trace-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestPlatform, type TestPlatform } from '../../../test/helpers/test-platform.ts';
import { createApiApp } from '../../main.ts';
import { ConfigError } from '../config.ts';
import type { App } from '../http/server.ts';
import { createLogger } from './logger.ts';
import { tracingConfigured } from './tracing-config.ts';
import { startTracing, type TracingHandle } from './tracing-sdk.ts';
import { currentTraceparent, instrumentJob, shutdownTracing, tracingActive, withSpan } from './tracing.ts';

const exporter = new InMemorySpanExporter();
const logLines: Array<Record<string, any>> = [];
const sink = new Writable({
  write(chunk, _enc, cb) {
    for (const l of chunk.toString().split('\n')) if (l.trim()) logLines.push(JSON.parse(l));
    cb();
  },
});

describe('tracing (in-memory exporter)', () => {
  let handle: TracingHandle;
  let tp: TestPlatform;
  let app: App;
  let upstream: Server;
  let upstreamUrl: string;
  const upstreamHeaders: IncomingHttpHeaders[] = [];
  const jobs: Array<Promise<unknown>> = [];

  beforeAll(async () => {
    // Before any Fastify instance exists: @fastify/otel attaches to each new instance.
    handle = startTracing({ exporter, simple: true });
    upstream = createServer((req, res) => {
      upstreamHeaders.push(req.headers);
      res.end('{"ok":true}');
    });
    await new Promise<void>((resolve) => upstream.listen(0, '127.0.0.1', resolve));
    const address = upstream.address();
    upstreamUrl = `http://127.0.0.1:${typeof address === 'object' && address ? address.port : 0}/hook`;

    const logger = createLogger('info', sink);
    tp = await createTestPlatform({ logger });
    app = await createApiApp(tp, {
      authenticator: tp.modules.authenticator,
      routes: [
        {
          name: 'probe',
          prefix: '/v1',
          plugin: async (scope) => {
            scope.post('/probe', { config: { public: true } }, async (request) => {
              // An outbound call: the fetch instrumentation adds a CLIENT span and a traceparent header.
              await fetch(upstreamUrl, { method: 'POST', body: '{}' });
              // What the outbox stores with an event, and what the job runner gets back later.
              const traceparent = currentTraceparent();
              jobs.push(
                new Promise((r) => setTimeout(r, 5)).then(() =>
                  instrumentJob({ queue: 'probe_consumer', name: 'probe.happened', traceparent, attempt: 1 }, async () => {
                    request.log.info('job ran');
                    tp.logger.info('job log line');
                  }),
                ),
              );
              request.log.info('handler ran');
              return { traceparent };
            });
          },
        },
      ],
    });
  });

  afterAll(async () => {
    await app?.close();
    await tp?.close();
    await handle?.shutdown();
    await new Promise((r) => upstream?.close(r));
  });

  const byKind = (spans: ReadableSpan[], kind: SpanKind) => spans.filter((s) => s.kind === kind);
  const parentId = (s: ReadableSpan) => s.parentSpanContext?.spanId;

  it('one trace: incoming request → outbound HTTP → job, continuing the caller\'s trace context', async () => {
    exporter.reset();
    const callerTrace = '4bf92f3577b34da6a3ce929d0e0e4736';
    const res = await app.inject({
      method: 'POST',
      url: '/v1/probe',
      headers: { traceparent: `00-${callerTrace}-00f067aa0ba902b7-01`, 'x-request-id': 'trace-req-1' },
      payload: {},
    });
    expect(res.statusCode).toBe(200);
    await Promise.all(jobs);

    const spans = exporter.getFinishedSpans();
    const server = byKind(spans, SpanKind.SERVER).find((s) => s.attributes['http.route'] === '/v1/probe')!;
    expect(server).toBeDefined();
    expect(server.spanContext().traceId).toBe(callerTrace);
    expect(parentId(server)).toBe('00f067aa0ba902b7');

    const client = byKind(spans, SpanKind.CLIENT).find((s) => String(s.attributes['url.full'] ?? '').includes('/hook'))!;
    expect(client).toBeDefined();
    expect(client.spanContext().traceId).toBe(callerTrace);
    // The upstream saw our trace context, naming the CLIENT span as its parent.
    expect(upstreamHeaders.at(-1)?.traceparent).toBe(`00-${callerTrace}-${client.spanContext().spanId}-01`);

    const job = byKind(spans, SpanKind.CONSUMER).find((s) => s.name === 'probe_consumer process')!;
    expect(job).toBeDefined();
    expect(job.spanContext().traceId).toBe(callerTrace);
    expect(job.attributes).toMatchObject({ 'messaging.destination.name': 'probe_consumer', 'plinth.job.name': 'probe.happened' });
    // The job's parent is the span that was active in the handler when the traceparent was captured.
    const handlerSpanId = (res.json() as { traceparent: string }).traceparent.split('-')[2];
    expect(parentId(job)).toBe(handlerSpanId);
    expect(spans.find((s) => s.spanContext().spanId === handlerSpanId)?.spanContext().traceId).toBe(callerTrace);

    // Logs written inside the request and inside the job carry the trace id.
    expect(logLines.find((l) => l.msg === 'handler ran')).toMatchObject({ requestId: 'trace-req-1', traceId: callerTrace });
    expect(logLines.find((l) => l.msg === 'job log line')).toMatchObject({ traceId: callerTrace, spanId: job.spanContext().spanId });
  });

  it('starts a new trace without an incoming traceparent, ignores a malformed one, and skips /metrics and probes', async () => {
    exporter.reset();
    const res = await app.inject({ method: 'POST', url: '/v1/probe', headers: { traceparent: 'garbage' }, payload: {} });
    await Promise.all(jobs);
    const server = byKind(exporter.getFinishedSpans(), SpanKind.SERVER).find((s) => s.attributes['http.route'] === '/v1/probe')!;
    expect(server.spanContext().traceId).toMatch(/^[0-9a-f]{32}$/);
    expect(parentId(server)).toBeUndefined();
    expect((res.json() as { traceparent: string }).traceparent).toContain(server.spanContext().traceId);

    exporter.reset();
    await app.inject({ url: '/metrics' });
    await app.inject({ url: '/livez' });
    await app.inject({ url: '/readyz' });
    expect(exporter.getFinishedSpans().filter((s) => s.kind === SpanKind.SERVER)).toHaveLength(0);
  });

  it('records a failing job as an error span and still observes its duration', async () => {
    exporter.reset();
    await expect(
      instrumentJob({ queue: 'probe_consumer', name: 'probe.failed' }, async () => {
        throw new Error('handler exploded');
      }),
    ).rejects.toThrow('handler exploded');
    const span = exporter.getFinishedSpans().find((s) => s.attributes['plinth.job.name'] === 'probe.failed')!;
    expect(span.status.code).toBe(2); // ERROR
    expect(span.events.some((e) => e.name === 'exception')).toBe(true);
    const metrics = await (await app.inject({ url: '/metrics' })).body;
    expect(metrics).toMatch(/plinth_job_duration_seconds_count\{queue="probe_consumer",outcome="failure"\} 1/);
    expect(metrics).toMatch(/plinth_job_duration_seconds_count\{queue="probe_consumer",outcome="success"\} [1-9]/);
  });

  it('withSpan nests under the active span', async () => {
    exporter.reset();
    await withSpan('outer', {}, async (outer) => {
      await withSpan('inner', { kind: SpanKind.CLIENT }, async () => undefined);
      expect(outer.isRecording()).toBe(true);
    });
    const [inner, outer] = exporter.getFinishedSpans();
    expect(inner!.name).toBe('inner');
    expect(parentId(inner!)).toBe(outer!.spanContext().spanId);
  });

  it('is switched on only by the standard OTEL_* variables', () => {
    expect(tracingActive()).toBe(true);
    expect(tracingConfigured({})).toBe(false);
    expect(tracingConfigured({ OTEL_EXPORTER_OTLP_ENDPOINT: 'http://127.0.0.1:4318' })).toBe(true);
    expect(tracingConfigured({ OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: 'http://127.0.0.1:4318/v1/traces' })).toBe(true);
    expect(tracingConfigured({ OTEL_TRACES_EXPORTER: 'console' })).toBe(true);
    expect(tracingConfigured({ OTEL_TRACES_EXPORTER: 'none', OTEL_EXPORTER_OTLP_ENDPOINT: 'http://x' })).toBe(false);
    expect(tracingConfigured({ OTEL_SDK_DISABLED: 'true', OTEL_EXPORTER_OTLP_ENDPOINT: 'http://x' })).toBe(false);
  });

  it('refuses an exporter or protocol it does not ship, naming the variable', () => {
    expect(() => startTracing({ env: {}, exporterNames: ['zipkin'] })).toThrow(ConfigError);
    expect(() => startTracing({ env: {}, exporterNames: ['zipkin'] })).toThrow(/OTEL_TRACES_EXPORTER/);
    expect(() => startTracing({ env: { OTEL_EXPORTER_OTLP_PROTOCOL: 'grpc' }, exporterNames: ['otlp'] })).toThrow(/OTEL_EXPORTER_OTLP_PROTOCOL/);
  });

  it('shutdownTracing flushes and stops the SDK once', async () => {
    // Runs last: afterwards the API is back to no-ops.
    await shutdownTracing();
    expect(tracingActive()).toBe(false);
    await shutdownTracing();
  });
});
