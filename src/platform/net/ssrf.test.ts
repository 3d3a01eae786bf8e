import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { destinationProblem, guardedLookup, isForbiddenAddress, type Resolver } from './ssrf.ts';

describe('SSRF address policy (ipaddr.js ranges, default deny)', () => {
  it('refuses every non-global address form, including IPv6 forms that embed IPv4', () => {
    const forbidden = [
      // IPv4: loopback, private, link-local (cloud metadata), CGNAT, unspecified, broadcast, multicast, reserved, docs
      '127.0.0.1', '127.255.255.254', '10.0.0.1', '172.16.0.1', '172.31.255.255', '192.168.1.1', '169.254.169.254',
      '100.64.0.1', '0.0.0.0', '0.1.2.3', '255.255.255.255', '224.0.0.1', '240.0.0.1', '192.0.2.1', '198.18.0.1', '192.0.0.8',
      // IPv6: loopback, unspecified, link-local (with zone), unique-local, site-local, multicast, documentation, discard
      '::1', '::', 'fe80::1', 'fe80::1%eth0', 'fc00::1', 'fd12:3456::1', 'fec0::1', 'feff::1', 'ff02::1', '2001:db8::1', '100::1',
      // IPv6 carrying IPv4: compatible, mapped (both spellings), translated, NAT64, 6to4, Teredo
      '::127.0.0.1', '::7f00:1', '::ffff:127.0.0.1', '::ffff:7f00:1', '::ffff:0:7f00:1', '::ffff:0:a00:1', '64:ff9b::7f00:1',
      '64:ff9b::a9fe:a9fe', '2002:7f00:1::1', '2002:a00:1::1', '2001:0:4136:e378:8000:63bf:3fff:fdd2',
      // not an address at all
      'localhost', '', 'not-an-ip', '1.2.3', '::gg',
    ];
    for (const a of forbidden) expect(isForbiddenAddress(a), a).toBe(true);
    for (const a of ['93.184.215.14', '8.8.8.8', '1.1.1.1', '2606:4700:4700::1111', '2a00:1450:4001:80e::200e']) {
      expect(isForbiddenAddress(a), a).toBe(false);
    }
  });

  it('a host name is judged by every address it resolves to (injectable resolver)', async () => {
    const resolver = (map: Record<string, string[]>): Resolver => async (h) => (map[h] ?? []).map((address) => ({ address, family: address.includes(':') ? 6 : 4 }));
    const r = resolver({ 'internal.example': ['127.0.0.1'], 'mixed.example': ['93.184.215.14', '10.0.0.5'], 'public.example': ['93.184.215.14'] });
    expect(await destinationProblem('internal.example', r)).toBe('forbidden');
    expect(await destinationProblem('mixed.example', r)).toBe('forbidden');
    expect(await destinationProblem('public.example', r)).toBeNull();
    expect(await destinationProblem('nowhere.example', r)).toBe('unresolvable');
    expect(await destinationProblem('[::ffff:0:7f00:1]', r)).toBe('forbidden');
  });

  describe('connect-time check: the address actually connected to', () => {
    let server: http.Server;
    let port: number;
    let hits = 0;
    beforeAll(async () => {
      server = http.createServer((_req, res) => {
        hits++;
        res.end('internal secret');
      });
      await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
      port = (server.address() as AddressInfo).port;
    });
    afterAll(() => new Promise<void>((r) => server.close(() => r())));

    const get = (host: string, resolve: Resolver) =>
      new Promise<number>((resolveP, reject) => {
        const req = http.get({ host, port, path: '/', lookup: guardedLookup(resolve) }, (res) => {
          res.resume();
          resolveP(res.statusCode ?? 0);
        });
        req.on('error', reject);
      });

    it('refuses a name that resolves to 127.0.0.1, and DNS rebinding (public at check time, loopback at connect time)', async () => {
      const toLoopback: Resolver = async () => [{ address: '127.0.0.1', family: 4 }];
      await expect(get('hooks.attacker.example', toLoopback)).rejects.toMatchObject({ code: 'FORBIDDEN_ADDRESS' });
      let calls = 0;
      const rebinding: Resolver = async () => (calls++ === 0 ? [{ address: '93.184.215.14', family: 4 }] : [{ address: '127.0.0.1', family: 4 }]);
      expect(await destinationProblem('rebind.attacker.example', rebinding)).toBeNull();
      await expect(get('rebind.attacker.example', rebinding)).rejects.toMatchObject({ code: 'FORBIDDEN_ADDRESS' });
      expect(hits).toBe(0);
    });
  });
});
