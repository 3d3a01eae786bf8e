import net from 'node:net';

/**
 * A TCP proxy on a free loopback port in front of one upstream (Redis), that a fault run can cut and heal.
 *
 * `cut('blackhole')` is a network partition as a client sees one: connections stay open, nothing gets
 * through in either direction (bytes are held, like unacknowledged segments), new connections are accepted
 * but not connected onward. `heal()` delivers what was held and connects the waiting clients, as TCP would
 * once the route is back. `cut('reset')` instead closes every connection and refuses new ones (a process
 * or host that went away).
 */
export interface TcpProxy {
  port: number;
  url: string;
  cut(mode?: 'blackhole' | 'reset'): void;
  heal(): void;
  readonly state: 'open' | 'blackhole' | 'reset';
  close(): Promise<void>;
}

interface Pair {
  client: net.Socket;
  upstream?: net.Socket;
  /** Bytes held while cut, per direction. */
  toUpstream: Buffer[];
  toClient: Buffer[];
}

export async function startTcpProxy(upstreamHost: string, upstreamPort: number, scheme = 'redis'): Promise<TcpProxy> {
  let state: TcpProxy['state'] = 'open';
  const pairs = new Set<Pair>();

  function connectUpstream(p: Pair): void {
    const up = net.connect(upstreamPort, upstreamHost);
    p.upstream = up;
    up.setNoDelay(true);
    up.on('data', (buf) => {
      if (state === 'open') p.client.write(buf);
      else p.toClient.push(buf);
    });
    const end = () => {
      p.client.destroy();
      pairs.delete(p);
    };
    up.on('error', end);
    up.on('close', end);
    for (const buf of p.toUpstream.splice(0)) up.write(buf);
  }

  const server = net.createServer((client) => {
    if (state === 'reset') {
      client.destroy();
      return;
    }
    client.setNoDelay(true);
    const p: Pair = { client, toUpstream: [], toClient: [] };
    pairs.add(p);
    client.on('data', (buf) => {
      if (state === 'open' && p.upstream) p.upstream.write(buf);
      else p.toUpstream.push(buf);
    });
    const end = () => {
      p.upstream?.destroy();
      pairs.delete(p);
    };
    client.on('error', end);
    client.on('close', end);
    if (state === 'open') connectUpstream(p);
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const port = (server.address() as net.AddressInfo).port;

  return {
    port,
    url: `${scheme}://127.0.0.1:${port}`,
    get state() {
      return state;
    },
    cut(mode = 'blackhole') {
      state = mode;
      if (mode === 'reset') {
        for (const p of pairs) {
          p.client.destroy();
          p.upstream?.destroy();
        }
        pairs.clear();
      }
    },
    heal() {
      state = 'open';
      for (const p of pairs) {
        if (!p.upstream) connectUpstream(p);
        else for (const buf of p.toUpstream.splice(0)) p.upstream.write(buf);
        for (const buf of p.toClient.splice(0)) p.client.write(buf);
      }
    },
    async close() {
      for (const p of pairs) {
        p.client.destroy();
        p.upstream?.destroy();
      }
      pairs.clear();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
