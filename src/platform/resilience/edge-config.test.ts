import { describe, expect, it } from 'vitest';
import { ConfigError, loadConfig } from '../config.ts';

describe('edge configuration', () => {
  it('has documented defaults; adaptive concurrency limiting is on in production only; rate-limit leases 2 % / 1 s', () => {
    const dev = loadConfig({});
    expect(dev.edge).toMatchObject({
      rateLimitEnabled: true,
      rateLimitWindowSec: 60,
      rateLimitPrincipal: 1200,
      rateLimitOrg: 6000,
      rateLimitIp: 300,
      idempotencyTtlSec: 86_400,
      idempotencyLeaseSec: 5,
      pressureMaxEventLoopDelayMs: 0,
      cacheL1TtlMs: 5000,
      rateLimitLeasePercent: 2,
      rateLimitLeaseMs: 1000,
    });
    const prod = loadConfig({ NODE_ENV: 'production', DATABASE_URL: 'postgres://db/x', REDIS_URL: 'redis://r:6379', WEBHOOK_SECRET_KEY: 'a'.repeat(64) });
    expect(dev.edge.concurrencyLimit.enabled).toBe(false);
    expect(prod.edge.pressureMaxEventLoopDelayMs).toBe(0);
    expect(prod.edge.concurrencyLimit).toEqual({ enabled: true, initialLimit: 20, minLimit: 4, maxLimit: 1000, retryAfterSec: 1 });
    expect(loadConfig({ NODE_ENV: 'production', DATABASE_URL: 'postgres://db/x', REDIS_URL: 'redis://r:6379', WEBHOOK_SECRET_KEY: 'a'.repeat(64), CONCURRENCY_LIMIT_ENABLED: 'false' }).edge.concurrencyLimit.enabled).toBe(false);
  });

  it('reads overrides and refuses bad values with one line naming the variable', () => {
    expect(loadConfig({ RATE_LIMIT_ORG: '50', RATE_LIMIT_ENABLED: 'false' }).edge).toMatchObject({ rateLimitOrg: 50, rateLimitEnabled: false });
    expect(() => loadConfig({ RATE_LIMIT_PRINCIPAL: '0' })).toThrow(new ConfigError('RATE_LIMIT_PRINCIPAL', 'must be an integer between 1 and 10000000 (got 0)'));
    expect(() => loadConfig({ IDEMPOTENCY_TTL_SEC: 'a day' })).toThrow(/IDEMPOTENCY_TTL_SEC must be an integer/);
    expect(() => loadConfig({ RATE_LIMIT_ENABLED: 'maybe' })).toThrow(/RATE_LIMIT_ENABLED must be true or false/);
    expect(loadConfig({ CONCURRENCY_LIMIT_ENABLED: 'true', CONCURRENCY_LIMIT_MAX: '10' }).edge.concurrencyLimit).toMatchObject({ enabled: true, initialLimit: 10, maxLimit: 10 });
    expect(() => loadConfig({ CONCURRENCY_LIMIT_MIN: '50', CONCURRENCY_LIMIT_MAX: '10' })).toThrow(/CONCURRENCY_LIMIT_MAX must be at least/);
    expect(() => loadConfig({ CONCURRENCY_LIMIT_INITIAL: '2000' })).toThrow(/CONCURRENCY_LIMIT_INITIAL must be between/);
  });
});
