/**
 * The deploy drill's deliberately bad canary: this checkout's API exactly as `plinth start` with
 * PLINTH_ROLE=api runs it (compose + createApiApp, same lifecycle and readiness drain), except that a share
 * of the /v1 requests is answered 500 before it reaches the app:
 *
 *   DRILL_FAIL_RATE=0.3   the share of /v1 requests answered 500 (0..1); /readyz, /livez are never touched,
 *                         so HAProxy keeps the instance in rotation and only the drill's comparison can catch it
 *
 * Started by bench/cluster/deploy-drill.ts; test-only, like fault-worker.ts. Nothing in src/ knows about it.
 */
import http from 'node:http';

const failRate = Number(process.env.DRILL_FAIL_RATE ?? 0);
if (!Number.isFinite(failRate) || failRate < 0 || failRate > 1) throw new Error('DRILL_FAIL_RATE must be a number within 0..1');

const { compose, createApiApp } = await import('../../src/main.ts');
const { installSignalHandlers } = await import('../../src/platform/lifecycle.ts');

const { platform, modules } = await compose();
const app = await createApiApp(platform, modules);
const problem = JSON.stringify({ type: 'about:blank', title: 'Internal Server Error', status: 500, detail: 'deploy drill: injected canary failure' });
// The app's own request handling (app.routing) behind a listener that fails a share of the API calls.
const server = http.createServer((req, res) => {
  if (req.url?.startsWith('/v1/') && Math.random() < failRate) {
    req.resume();
    res.writeHead(500, { 'content-type': 'application/problem+json', connection: 'close' });
    res.end(problem);
    return;
  }
  app.routing(req, res);
});
platform.lifecycle.onShutdown({
  name: 'http',
  close: async () => {
    await new Promise<void>((resolve) => server.close(() => resolve()));
    await app.close();
  },
});
await new Promise<void>((resolve) => server.listen(platform.config.port, platform.config.host, resolve));
installSignalHandlers(platform.lifecycle, platform.logger);
console.log(`drill-canary-api ready pid=${process.pid} port=${platform.config.port} failRate=${failRate}`);
