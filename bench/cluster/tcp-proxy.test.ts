import net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTcpProxy, type TcpProxy } from './tcp-proxy.ts';

/** The fault suite's partition: a blackhole holds bytes both ways and delivers them on heal; a reset closes. */
describe('tcp-proxy (the fault suite partition)', () => {
  let echo: net.Server;
  let proxy: TcpProxy;

  beforeAll(async () => {
    echo = net.createServer((s) => s.on('data', (b) => s.write(b)));
    await new Promise<void>((r) => echo.listen(0, '127.0.0.1', () => r()));
    proxy = await startTcpProxy('127.0.0.1', (echo.address() as net.AddressInfo).port);
  });
  afterAll(async () => {
    await proxy?.close();
    await new Promise<void>((r) => echo.close(() => r()));
  });

  const connect = () =>
    new Promise<{ socket: net.Socket; received: () => string; closed: () => boolean }>((resolve) => {
      let data = '';
      let closed = false;
      const socket = net.connect(proxy.port, '127.0.0.1', () => resolve({ socket, received: () => data, closed: () => closed }));
      socket.on('data', (b) => (data += b.toString()));
      socket.on('close', () => (closed = true));
      socket.on('error', () => undefined);
    });
  const until = async (ok: () => boolean, ms = 2_000) => {
    const end = Date.now() + ms;
    while (!ok() && Date.now() < end) await new Promise((r) => setTimeout(r, 10));
    return ok();
  };

  it('passes bytes when open, holds them while blackholed (old and new connections), delivers them on heal', async () => {
    const a = await connect();
    a.socket.write('one');
    expect(await until(() => a.received() === 'one')).toBe(true);
    proxy.cut('blackhole');
    a.socket.write('two');
    const b = await connect();
    b.socket.write('three');
    expect(await until(() => a.received() !== 'one' || b.received() !== '', 300)).toBe(false);
    expect(a.closed() || b.closed()).toBe(false);
    proxy.heal();
    expect(await until(() => a.received() === 'onetwo' && b.received() === 'three')).toBe(true);
    a.socket.destroy();
    b.socket.destroy();
  });

  it('reset closes every connection and refuses new ones until healed', async () => {
    const a = await connect();
    proxy.cut('reset');
    expect(await until(() => a.closed())).toBe(true);
    const b = await connect().catch(() => undefined);
    expect(await until(() => b === undefined || b.closed())).toBe(true);
    proxy.heal();
    const c = await connect();
    c.socket.write('back');
    expect(await until(() => c.received() === 'back')).toBe(true);
    c.socket.destroy();
  });
});
