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

  it('is repaired by the sweeper\'s redispatch (a plain re-add of the same id is a no-op)', async () => {
    const jobs = Array.from({ length: 20 }, () => job('test.repair'));
    await transport.dispatch(jobs);
    const [queue] = transport.queues(['test.repair']);
    // The queue entries vanish (eviction, a partial flush); the job hashes survive.
    await redis.del(`${prefix}:test.repair:wait`);
    for (const j of jobs) expect(await queue!.getJobState(j.event.id)).toBe('unknown');

    await transport.dispatch(jobs);
    for (const j of jobs) expect(await queue!.getJobState(j.event.id)).toBe('unknown');

    await transport.redispatch(jobs);
    for (const j of jobs) expect(await queue!.getJobState(j.event.id)).toBe('waiting');
    // Jobs already waiting are left as they are (no duplicates).
    await transport.redispatch(jobs);
    expect(await queue!.getWaitingCount()).toBe(20);
  });
});
