import { createHmac } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { signup, type SignedUp } from '../../../test/helpers/auth.ts';
import { createTestPlatform, type TestPlatform } from '../../../test/helpers/test-platform.ts';
import { loadConfig } from '../../platform/config.ts';
import { createDestinationPolicy } from '../../platform/resilience/policy.ts';
import { decryptSecret, encryptSecret, newSigningSecret, signPayload, verifySignature } from './notifications.crypto.ts';
import { sendWebhook } from './notifications.send.ts';
import { isForbiddenAddress, resolveProblem, urlProblem } from '../../platform/net/url-policy.ts';

/**
 * The production URL policy (WEBHOOK_STRICT_URLS, always on with NODE_ENV=production): https only, no
 * private/loopback/link-local targets, at registration and again at connect time. Plus the signing pieces.
 */
let t: TestPlatform;
let owner: SignedUp;

beforeAll(async () => {
  t = await createTestPlatform({ env: { WEBHOOK_STRICT_URLS: 'true' } });
  owner = await signup(t.app);
}, 120_000);
afterAll(async () => t?.close());

const create = (url: string) =>
  t.app.inject({ method: 'POST', url: `/v1/orgs/${owner.orgId}/webhooks`, headers: owner.auth, payload: { url, events: ['projects.task_created'] } });

describe('strict (production) webhook URLs', () => {
  it('refuses http, loopback, private, link-local and metadata addresses with 422 problem+json', async () => {
    for (const url of [
      'http://127.0.0.1:8080/hook',
      'http://hooks.example.com/x',
      'https://127.0.0.1/hook',
      'https://10.1.2.3/hook',
      'https://192.168.0.10/hook',
      'https://169.254.169.254/latest/meta-data',
      'https://[::1]/hook',
      'https://[fd00::1]/hook',
      'https://[::ffff:127.0.0.1]/hook',
      'https://localhost/hook',
      // IPv6 forms carrying IPv4 or other non-global ranges (found by the black-box test)
      'https://[::127.0.0.1]/hook',
      'https://[::ffff:0:7f00:1]/hook',
      'https://[2002:7f00:1::1]/hook',
      'https://[fec0::1]/hook',
      'https://[64:ff9b::a9fe:a9fe]/hook',
      'https://[2001:0:4136:e378:8000:63bf:3fff:fdd2]/hook',
      'https://[fe80::1]/hook',
      'https://0x7f.1/hook',
      'https://2130706433/hook',
    ]) {
      const res = await create(url);
      expect(res.statusCode, `${url} → ${res.body}`).toBe(422);
      expect(res.headers['content-type']).toContain('application/problem+json');
      expect(res.json().code).toBe('NOTIFICATIONS.INVALID_URL');
    }
    const long = await create(`https://hooks.example.com/${'x'.repeat(2100)}`);
    expect(long.statusCode).toBe(400);
  });

  it('accepts a public https address', async () => {
    const res = await create('https://93.184.215.14/hook');
    expect(res.statusCode, res.body).toBe(201);
  });

  it('refuses at connect time too (DNS can change after registration): forbidden_address, not retried', async () => {
    const policy = createDestinationPolicy({ name: 'webhook-test', timeoutMs: 1000, perTenantLimit: 5, global: { limit: 5, queue: 0 } });
    const result = await sendWebhook(
      { url: 'https://localhost:1/hook', id: 'evt', body: '{}', secret: newSigningSecret() },
      { policy, timeoutMs: 500, urlPolicy: { strict: true } },
    );
    expect(result).toMatchObject({ ok: false, transient: false, errorKind: 'forbidden_address' });
  });

  it('refuses at delivery a name that resolved to a public address at registration and to loopback now (rebinding)', async () => {
    let calls = 0;
    const resolve = async () => [{ address: calls++ === 0 ? '93.184.215.14' : '127.0.0.1', family: 4 }];
    const urlPolicy = { strict: true, resolve };
    expect(await resolveProblem('https://rebind.example/hook', urlPolicy)).toBeNull();
    const result = await sendWebhook(
      { url: 'https://rebind.example/hook', id: 'evt', body: '{}', secret: newSigningSecret() },
      { policy: createDestinationPolicy({ name: 'webhook-test', timeoutMs: 1000, perTenantLimit: 5, global: { limit: 5, queue: 0 } }), timeoutMs: 500, urlPolicy },
    );
    expect(result).toMatchObject({ ok: false, transient: false, errorKind: 'forbidden_address' });
    expect(await resolveProblem('https://internal.example/hook', { strict: true, resolve: async () => [{ address: '127.0.0.1', family: 4 }] })).toMatch(/private/);
  });

  it('refuses at delivery an IP literal the policy now forbids (no DNS lookup happens for literals)', async () => {
    const result = await sendWebhook(
      { url: 'https://[::ffff:0:7f00:1]:1/hook', id: 'evt', body: '{}', secret: newSigningSecret() },
      { policy: createDestinationPolicy({ name: 'webhook-test', timeoutMs: 1000, perTenantLimit: 5, global: { limit: 5, queue: 0 } }), timeoutMs: 500, urlPolicy: { strict: true } },
    );
    expect(result).toMatchObject({ ok: false, transient: false, errorKind: 'forbidden_address' });
  });
});

describe('webhook signing and secrets', () => {
  it('signs "id.timestamp.body" with HMAC-SHA256 (Standard Webhooks) and verifies with tolerance', () => {
    // Known vector: secret bytes = 32 × 0x01.
    const secret = `whsec_${Buffer.alloc(32, 1).toString('base64')}`;
    const sig = signPayload(secret, 'msg_1', 1_700_000_000, '{"a":1}');
    expect(sig).toBe('v1,' + createHmac('sha256', Buffer.alloc(32, 1)).update('msg_1.1700000000.{"a":1}').digest('base64'));
    const h = { id: 'msg_1', timestamp: '1700000000', signature: `v1,bogus ${sig}` };
    expect(verifySignature(secret, h, '{"a":1}', 300, 1_700_000_100)).toBe(true);
    expect(verifySignature(secret, h, '{"a":1}', 300, 1_700_001_000)).toBe(false);
    expect(verifySignature(secret, { ...h, id: 'msg_2' }, '{"a":1}', 300, 1_700_000_100)).toBe(false);
  });

  it('encrypts secrets with AES-256-GCM: round-trips, fresh nonce each time, tampering and wrong keys fail', () => {
    const key = Buffer.alloc(32, 7);
    const secret = newSigningSecret();
    const a = encryptSecret(secret, key);
    expect(a).not.toBe(encryptSecret(secret, key));
    expect(decryptSecret(a, key)).toBe(secret);
    expect(() => decryptSecret(a, Buffer.alloc(32, 8))).toThrow();
    const parts = a.split('.');
    parts[3] = Buffer.from('x'.repeat(10)).toString('base64url');
    expect(() => decryptSecret(parts.join('.'), key)).toThrow();
  });

  it('classifies addresses and URLs', () => {
    for (const a of ['127.0.0.1', '10.0.0.1', '172.16.5.5', '192.168.1.1', '169.254.169.254', '100.64.0.1', '0.0.0.0', '::1', 'fe80::1', 'fc00::1', '::ffff:10.0.0.1']) {
      expect(isForbiddenAddress(a), a).toBe(true);
    }
    for (const a of ['93.184.215.14', '8.8.8.8', '2606:4700::1111']) expect(isForbiddenAddress(a), a).toBe(false);
    expect(urlProblem('http://127.0.0.1:3000/x', { strict: false })).toBeNull();
    expect(urlProblem('http://localhost:3000/x', { strict: false })).toBeNull();
    expect(urlProblem('http://127.0.0.1:3000/x', { strict: true })).toMatch(/https/);
    expect(urlProblem('https://hooks.example.com/x#frag', { strict: true })).toMatch(/fragment/);
  });

  it('production refuses the development WEBHOOK_SECRET_KEY and malformed keys', () => {
    const prod = { NODE_ENV: 'production', DATABASE_URL: 'postgres://x@127.0.0.1/db', REDIS_URL: 'redis://127.0.0.1:6379' };
    expect(() => loadConfig(prod)).toThrow(/WEBHOOK_SECRET_KEY/);
    expect(() => loadConfig({ ...prod, WEBHOOK_SECRET_KEY: 'too-short' })).toThrow(/WEBHOOK_SECRET_KEY/);
    const key = Buffer.alloc(32, 9);
    const config = loadConfig({ ...prod, WEBHOOK_SECRET_KEY: key.toString('base64') });
    expect(config.notifications.webhookSecretKey.equals(key)).toBe(true);
    expect(config.notifications.webhookStrictUrls).toBe(true);
    expect(loadConfig({}).notifications.webhookStrictUrls).toBe(false);
  });
});
