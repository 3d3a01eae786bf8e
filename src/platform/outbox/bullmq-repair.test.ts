import { Redis } from 'ioredis';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { newId } from '../ids.ts';
import { createBullTransport, type BullTransport } from './bullmq-transport.ts';
import type { DeliveryJob } from './transport.ts';

const redisUrl = process.env.TEST_REDIS_URL;

function job(consumer: string): DeliveryJob {
  const id = newId();
  return {
    deliveryId: newId(),
    consumer,
    event: { id, name: 'test.repair', tenantId: null, payload: {}, occurredAt: new Date().toISOString(), requestId: null, traceparent: null },
  };
}

describe.runIf(redisUrl)('BullMQ: a job record that lost its queue entry', () => {
  const prefix = `plinth-test:${newId().slice(-8)}:bull`;
  let transport: BullTransport;
  let redis: Redis;
  beforeAll(() => {
    transport = createBullTransport({ redisUrl: redisUrl!, prefix, concurrency: 1, stalledMs: 30_000, logger: pino({ level: 'silent' }) });
    redis = new Redis(redisUrl!);
  });
  afterAll(async () => {
    await transport.close();
    const keys = await redis.keys(`${prefix}*`);
    if (keys.length > 0) await redis.del(...keys);
    redis.disconnect();
  });

  it('the relay\'s dispatch queues one batch job per consumer, not one job per delivery', async () => {
    const jobs = Array.from({ length: 20 }, () => job('test.batched'));
    await transport.dispatch(jobs);
    const [queue] = transport.queues(['test.batched']);
    const waiting = await queue!.getWaiting();
    expect(waiting).toHaveLength(1);
    expect((waiting[0]!.data as { batch: DeliveryJob[] }).batch.map((d) => d.deliveryId)).toEqual(jobs.map((j) => j.deliveryId));
  });

  it('is repaired by the sweeper\'s redispatch (a plain re-add of the same id is a no-op)', async () => {
    const jobs = Array.from({ length: 20 }, () => job('test.repair'));
    // The sweeper's (and a retry's) jobs: one per delivery, jobId = event id.
    await transport.redispatch(jobs);
    const [queue] = transport.queues(['test.repair']);
    for (const j of jobs) expect(await queue!.getJobState(j.event.id)).toBe('waiting');
    // The queue entries vanish (eviction, a partial flush); the job hashes survive.
    await redis.del(`${prefix}:test.repair:wait`);
    for (const j of jobs) expect(await queue!.getJobState(j.event.id)).toBe('unknown');

    // A plain re-add of the same ids does nothing…
    await queue!.addBulk(jobs.map((j) => ({ name: j.event.name, data: j, opts: { jobId: j.event.id } })));
    for (const j of jobs) expect(await queue!.getJobState(j.event.id)).toBe('unknown');

    // …the redispatch repairs them.
    await transport.redispatch(jobs);
    for (const j of jobs) expect(await queue!.getJobState(j.event.id)).toBe('waiting');
    // Jobs already waiting are left as they are (no duplicates).
    await transport.redispatch(jobs);
    expect(await queue!.getWaitingCount()).toBe(20);
  });
});

describe.runIf(redisUrl)('BullMQ: a held background consumer', () => {
  const prefix = `plinth-test:${newId().slice(-8)}:bull`;
  let heldUntil = 0;
  let transport: BullTransport;
  let redis: Redis;
  beforeAll(() => {
    transport = createBullTransport({
      redisUrl: redisUrl!,
      prefix,
      concurrency: 1,
      stalledMs: 30_000,
      logger: pino({ level: 'silent' }),
      heldFor: (consumer) => (consumer === 'test.held' ? Math.max(0, heldUntil - Date.now()) : 0),
    });
    redis = new Redis(redisUrl!);
  });
  afterAll(async () => {
    await transport.stop();
    await transport.close();
    const keys = await redis.keys(`${prefix}*`);
    if (keys.length > 0) await redis.del(...keys);
    redis.disconnect();
  });

  it('waits while held (nothing retried), then processes its jobs; other consumers are not held', async () => {
    const ran: Array<{ consumer: string; at: number }> = [];
    await transport.start(['test.held', 'test.free'], async (jobs) => {
      for (const j of jobs) ran.push({ consumer: j.consumer, at: Date.now() });
      return jobs.map(() => ({}));
    });
    const started = Date.now();
    heldUntil = started + 800;
    await transport.dispatch([job('test.held'), job('test.held'), job('test.free'), job('test.free')]);
    await new Promise((r) => setTimeout(r, 400));
    expect(ran.map((r) => r.consumer)).toEqual(['test.free', 'test.free']);
    for (let i = 0; i < 40 && ran.length < 4; i++) await new Promise((r) => setTimeout(r, 100));
    expect(ran.filter((r) => r.consumer === 'test.held')).toHaveLength(2);
    for (const r of ran.filter((x) => x.consumer === 'test.held')) expect(r.at - started).toBeGreaterThanOrEqual(750);
  });
});
