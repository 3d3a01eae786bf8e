import { describe, expect, it } from 'vitest';
import { ConfigError, loadConfig } from './config.ts';

describe('config', () => {
  it('defaults to the embedded mode on 127.0.0.1:3000', () => {
    const c = loadConfig({});
    expect(c).toMatchObject({ port: 3000, host: '127.0.0.1', databaseUrl: undefined, redisUrl: undefined, shutdownGraceMs: 10_000 });
    expect(c.dataDir).toMatch(/\.plinth$/);
    expect(c.loginThrottle).toEqual({ perAccountPerHour: 100, perIpPerHour: 1000, perAccountIpPerHour: 10, delayAfter: 5, maxDelaySec: 300 });
  });

  it('reads the payment gateway settings; the sandbox webhook secret is derived when unset', () => {
    const c = loadConfig({ STRIPE_SECRET_KEY: 'sk_test_x', STRIPE_WEBHOOK_SECRET: 'whsec_x', STRIPE_API_BASE: 'http://127.0.0.1:12111' });
    expect(c.paymentGateways).toMatchObject({ stripeSecretKey: 'sk_test_x', stripeWebhookSecret: 'whsec_x', stripeApiBase: 'http://127.0.0.1:12111', webhookToleranceSec: 300 });
    expect(c.paymentGateways.sandboxWebhookSecret).toMatch(/^[0-9a-f]{64}$/);
    expect(loadConfig({}).paymentGateways.stripeSecretKey).toBeUndefined();
  });

  it('WebAuthn: the relying party defaults to PUBLIC_URL; origins may be subdomains of the RP id', () => {
    expect(loadConfig({}).webauthn).toEqual({ rpId: '127.0.0.1', rpName: 'Plinth', origins: ['http://127.0.0.1:3000'] });
    expect(loadConfig({ PUBLIC_URL: 'https://api.example.com/' }).webauthn).toEqual({ rpId: 'api.example.com', rpName: 'Plinth', origins: ['https://api.example.com'] });
    const c = loadConfig({ WEBAUTHN_RP_ID: 'Example.com', WEBAUTHN_ORIGINS: 'https://app.example.com, https://example.com:8443/', WEBAUTHN_RP_NAME: 'Acme' });
    expect(c.webauthn).toEqual({ rpId: 'example.com', rpName: 'Acme', origins: ['https://app.example.com', 'https://example.com:8443'] });
  });

  it('reads the login throttling limits', () => {
    const c = loadConfig({ LOGIN_MAX_FAILURES_PER_ACCOUNT_PER_HOUR: '20', LOGIN_MAX_FAILURES_PER_IP_PER_HOUR: '500' });
    expect(c.loginThrottle).toMatchObject({ perAccountPerHour: 20, perIpPerHour: 500 });
  });

  it.each([
    [{ PORT: 'abc' }, /^Invalid configuration: PORT must be an integer/],
    [{ PORT: '70000' }, /PORT must be an integer between 0 and 65535/],
    [{ DATABASE_URL: 'mysql://x' }, /DATABASE_URL must use postgres:/],
    [{ DATABASE_URL: 'not a url' }, /DATABASE_URL must be a URL/],
    [{ REDIS_URL: 'http://x' }, /REDIS_URL must use redis:/],
    [{ LOG_LEVEL: 'loud' }, /LOG_LEVEL must be one of/],
    [{ STRIPE_API_BASE: 'ftp://127.0.0.1:12111' }, /STRIPE_API_BASE must use http: or https:/],
    [{ PAYMENT_WEBHOOK_TOLERANCE_SEC: '5' }, /PAYMENT_WEBHOOK_TOLERANCE_SEC must be an integer between 10/],
    [{ SHUTDOWN_GRACE_MS: '-1' }, /SHUTDOWN_GRACE_MS/],
    [{ DATABASE_REPLICA_URLS: 'postgres://r1/db' }, /DATABASE_REPLICA_URLS needs DATABASE_URL/],
    [{ LOGIN_MAX_FAILURES_PER_ACCOUNT_PER_HOUR: '0' }, /LOGIN_MAX_FAILURES_PER_ACCOUNT_PER_HOUR must be an integer between 1 and/],
    [{ LOGIN_MAX_FAILURES_PER_ACCOUNT_PER_HOUR: 'ten' }, /LOGIN_MAX_FAILURES_PER_ACCOUNT_PER_HOUR must be an integer/],
    [{ LOGIN_MAX_FAILURES_PER_IP_PER_HOUR: '0' }, /LOGIN_MAX_FAILURES_PER_IP_PER_HOUR must be an integer between 1 and/],
    [{ LOGIN_MAX_FAILURES_PER_IP_PER_HOUR: '1.5' }, /LOGIN_MAX_FAILURES_PER_IP_PER_HOUR must be an integer/],
    [{ NODE_ENV: 'production', REDIS_URL: 'redis://x' }, /DATABASE_URL is required when NODE_ENV=production/],
    [{ NODE_ENV: 'production', DATABASE_URL: 'postgres://x/db' }, /REDIS_URL is required when NODE_ENV=production/],
    [{ WEBAUTHN_RP_ID: 'example.com', WEBAUTHN_ORIGINS: 'https://app.evil.com' }, /WEBAUTHN_ORIGINS host app.evil.com is not example.com or a subdomain/],
    [{ WEBAUTHN_RP_ID: 'example.com', WEBAUTHN_ORIGINS: 'https://example.com/login' }, /WEBAUTHN_ORIGINS must be bare origins/],
    [{ WEBAUTHN_RP_ID: 'example.com', WEBAUTHN_ORIGINS: 'ftp://example.com' }, /WEBAUTHN_ORIGINS must use https: or http:/],
    [{ WEBAUTHN_RP_ID: 'https://example.com' }, /WEBAUTHN_RP_ID must be a host name/],
    [{ NODE_ENV: 'production', DATABASE_URL: 'postgres://x/db', REDIS_URL: 'redis://x', WEBHOOK_SECRET_KEY: Buffer.alloc(32, 1).toString('base64'), WEBAUTHN_RP_ID: 'example.com', WEBAUTHN_ORIGINS: 'http://app.example.com' }, /WEBAUTHN_ORIGINS must be https in production/],
  ])('refuses %j with one line naming the variable', (env, message) => {
    let error: unknown;
    try {
      loadConfig(env);
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(ConfigError);
    expect((error as Error).message).toMatch(message);
    expect((error as Error).message).not.toContain('\n');
  });

  it('binds 0.0.0.0 in production and parses replicas', () => {
    const c = loadConfig({
      NODE_ENV: 'production',
      DATABASE_URL: 'postgres://p/db',
      DATABASE_REPLICA_URLS: 'postgres://r1/db, postgres://r2/db',
      REDIS_URL: 'redis://127.0.0.1:6379',
      WEBHOOK_SECRET_KEY: Buffer.alloc(32, 1).toString('base64'),
    });
    expect(c.host).toBe('0.0.0.0');
    expect(c.databaseReplicaUrls).toEqual(['postgres://r1/db', 'postgres://r2/db']);
  });
});
