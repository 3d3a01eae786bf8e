import { timingSafeEqual } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import { METRICS_CONTENT_TYPE, scrape, startDefaultMetrics } from './metrics.ts';

/** Constant-time check of `Authorization: Bearer <token>`. */
export function bearerMatches(header: string | undefined, token: string): boolean {
  if (!header?.startsWith('Bearer ')) return false;
  const given = Buffer.from(header.slice(7));
  const expected = Buffer.from(token);
  return given.length === expected.length && timingSafeEqual(given, expected);
}

/**
 * A bare listener serving only GET /metrics (and /livez) for processes without the API — the worker
 * role — so Prometheus can scrape job and outbox metrics where they are produced. Same token rule as
 * the API's /metrics. Errors are RFC 9457 problem+json like everywhere else.
 */
export async function startMetricsServer(opts: { port: number; host: string; token?: string }): Promise<Server> {
  startDefaultMetrics();
  const server = createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    const problem = (status: number, code: string, detail: string, headers: Record<string, string> = {}) => {
      res.writeHead(status, { 'content-type': 'application/problem+json; charset=utf-8', ...headers });
      res.end(JSON.stringify({ type: `https://plinth.dev/problems/${code.toLowerCase().replace(/[._]/g, '-')}`, title: status === 401 ? 'Unauthorized' : status === 404 ? 'Not Found' : 'Method Not Allowed', status, detail, code }));
    };
    if (path !== '/metrics' && path !== '/livez') return problem(404, 'HTTP.NOT_FOUND', 'Only /metrics and /livez are served here');
    if (req.method !== 'GET' && req.method !== 'HEAD') return problem(405, 'HTTP.METHOD_NOT_ALLOWED', 'Use GET', { allow: 'GET' });
    if (path === '/livez') {
      res.writeHead(200, { 'content-type': 'application/json' }).end('{"status":"ok"}');
      return;
    }
    if (opts.token && !bearerMatches(req.headers.authorization, opts.token)) {
      return problem(401, 'METRICS.UNAUTHORIZED', 'A valid metrics bearer token is required', { 'www-authenticate': 'Bearer' });
    }
    scrape().then(
      (body) => res.writeHead(200, { 'content-type': METRICS_CONTENT_TYPE, 'cache-control': 'no-store' }).end(body),
      () => problem(500, 'HTTP.INTERNAL', 'The metrics could not be collected'),
    );
  });
  server.keepAliveTimeout = 65_000;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port, opts.host, () => resolve());
  });
  return server;
}

/** For `plinth worker`: starts the listener when METRICS_PORT is set and closes it on shutdown. */
export async function startMetricsListener(platform: {
  config: { metricsPort?: number; metricsToken?: string; host: string };
  lifecycle: { onShutdown(closer: { name: string; close(): Promise<void> }): void };
}): Promise<Server | undefined> {
  const { config, lifecycle } = platform;
  if (config.metricsPort === undefined) return undefined;
  const server = await startMetricsServer({ port: config.metricsPort, host: config.host, token: config.metricsToken });
  lifecycle.onShutdown({ name: 'metrics', close: () => new Promise<void>((resolve) => server.close(() => resolve())) });
  return server;
}
