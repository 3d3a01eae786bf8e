/**
 * The image's HEALTHCHECK (no curl in the slim image): the API answers /readyz on PORT; the worker, which
 * has no API listener, answers /livez on METRICS_PORT. Exit 0 = healthy. Kept free of imports so the
 * check costs one small node start.
 */
const worker = Boolean(process.env.METRICS_PORT);
const port = (worker ? process.env.METRICS_PORT : process.env.PORT) ?? '3000';
const url = `http://127.0.0.1:${port}${worker ? '/livez' : '/readyz'}`;
try {
  const res = await fetch(url, { signal: AbortSignal.timeout(2_000) });
  process.exit(res.ok ? 0 : 1);
} catch {
  process.exit(1);
}
