import net from 'node:net';

/**
 * A TCP proxy on a free loopback port to `targetUrl` (e.g. the test Redis) whose link can be cut and
 * healed: one process's view of a network partition, without touching the shared server.
 */
export async function createTcpProxy(targetUrl: string): Promise<{ port: number; cut(): void; heal(): void; close(): Promise<void> }> {
  const target = new URL(targetUrl);
  const sockets = new Set<net.Socket>();
  let open = true;
  const server = net.createServer((client) => {
    if (!open) return client.destroy();
    const upstream = net.connect(Number(target.port || 6379), target.hostname);
    client.pipe(upstream).pipe(client);
    for (const s of [client, upstream]) {
      sockets.add(s);
      s.on('error', () => {});
      s.on('close', () => sockets.delete(s));
    }
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const cut = () => {
    open = false;
    for (const s of sockets) s.destroy();
  };
  return {
    port: (server.address() as net.AddressInfo).port,
    cut,
    heal: () => void (open = true),
    close: async () => {
      cut();
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
}
