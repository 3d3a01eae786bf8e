import { Writable } from 'node:stream';
import { SpanKind } from '@opentelemetry/api';
import { InMemorySpanExporter } from '@opentelemetry/sdk-trace-node';
import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestPlatform, type TestPlatform } from '../../../test/helpers/test-platform.ts';
import { createApiApp } from '../../main.ts';
import type { App } from '../http/server.ts';
import { createLogger } from './logger.ts';
import { startTracing, type TracingHandle } from './tracing-sdk.ts';

const exporter = new InMemorySpanExporter();
const logLines: Array<Record<string, any>> = [];
const sink = new Writable({
  write(chunk, _enc, cb) {
    for (const l of chunk.toString().split('\n')) if (l.trim()) logLines.push(JSON.parse(l));
    cb();
  },
});

async function waitFor(check: () => boolean, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 20));
  }
}

/**
 * The proof: with the real event bus (outbox table, relay, transport — in-process embedded,
 * BullMQ with TEST_REDIS_URL), a request that adds an event and the job that handles it are one trace.
 */
describe('one trace: request → outbox → job (real event bus)', () => {
  let handle: TracingHandle;
  let tp: TestPlatform;
  let app: App;
  const handled: Array<{ eventId: string; traceparent: string | null }> = [];

  beforeAll(async () => {
    handle = startTracing({ exporter, simple: true });
    tp = await createTestPlatform({ logger: createLogger('info', sink) });
    tp.events.subscribe('obs.probe_happened', 'obs.trace_probe', async (event, ctx) => {
      ctx.logger.info('probe handled');
      handled.push({ eventId: event.id, traceparent: event.traceparent });
    });
    app = await createApiApp(tp, {
      ...tp.modules,
      routes: [
        {
          name: 'probe',
          prefix: '/v1',
          plugin: async (scope) => {
            scope.post('/obs-probe', { config: { public: true } }, async () => {
              const event = await tp.db.app.transaction().execute((trx) => tp.events.add(trx, { name: 'obs.probe_happened', payload: { ok: true } }));
              return { id: event.id };
            });
          },
        },
      ],
    });
    await tp.events.startWorker();
  });
  afterAll(async () => {
    await app?.close();
    await tp?.close();
    await handle?.shutdown();
  });

  it('the job span continues the request trace; the outbox row carries the handler span as parent', async () => {
    exporter.reset();
    const callerTrace = '5bf92f3577b34da6a3ce929d0e0e4737';
    const res = await app.inject({
      method: 'POST',
      url: '/v1/obs-probe',
      headers: { traceparent: `00-${callerTrace}-10f067aa0ba902b7-01`, 'x-request-id': 'obs-outbox-1' },
      payload: {},
    });
    expect(res.statusCode).toBe(200);
    const eventId = res.json().id as string;
    await waitFor(() => handled.some((h) => h.eventId === eventId));
    await waitFor(() => exporter.getFinishedSpans().some((s) => s.kind === SpanKind.CONSUMER && s.attributes['plinth.job.name'] === 'obs.probe_happened'));

    const { rows } = await sql<{ traceparent: string }>`select traceparent from outbox where id = ${eventId}`.execute(tp.db.app);
    const stored = rows[0]!.traceparent;
    expect(stored).toMatch(new RegExp(`^00-${callerTrace}-[0-9a-f]{16}-01$`));
    const storedSpanId = stored.split('-')[2]!;

    const spans = exporter.getFinishedSpans();
    const request = spans.find((s) => s.kind === SpanKind.SERVER && s.attributes['http.route'] === '/v1/obs-probe')!;
    expect(request.spanContext().traceId).toBe(callerTrace);
    // The stored parent is a span of this request (its handler span), not the caller's span.
    const storedSpan = spans.find((s) => s.spanContext().spanId === storedSpanId)!;
    expect(storedSpan).toBeDefined();
    expect(storedSpan.spanContext().traceId).toBe(callerTrace);
    expect(storedSpan.parentSpanContext?.spanId).toBe(request.spanContext().spanId);

    const job = spans.find((s) => s.kind === SpanKind.CONSUMER && s.attributes['plinth.job.name'] === 'obs.probe_happened')!;
    expect(job.name).toBe('obs.trace_probe process');
    expect(job.spanContext().traceId).toBe(callerTrace);
    expect(job.parentSpanContext?.spanId).toBe(storedSpanId);

    const line = logLines.find((l) => l.msg === 'probe handled')!;
    expect(line).toMatchObject({ traceId: callerTrace, spanId: job.spanContext().spanId, requestId: 'obs-outbox-1' });

    const metrics = (await app.inject({ url: '/metrics' })).body;
    expect(metrics).toMatch(/plinth_job_duration_seconds_count\{queue="obs\.trace_probe",outcome="success"\} 1/);
  });
});
