import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { seedPgliteDataDir } from '../testing/test-db.ts';

/**
 * The real entry point: `plinth start` with only the standard OTEL_* variables set exports spans over
 * OTLP/HTTP (protobuf) to the configured collector — here a local receiver that records what it gets.
 */
describe('plinth start with OTEL_EXPORTER_OTLP_ENDPOINT', () => {
  let collector: Server;
  let endpoint: string;
  const received: Array<{ url: string; contentType: string; body: Buffer }> = [];
  const dataDir = mkdtempSync(path.join(os.tmpdir(), 'plinth-otel-'));

  beforeAll(async () => {
    // An already-migrated embedded database (what every start after the first finds): this test is about
    // the spans, and lifecycle.test.ts covers a first start on an empty data dir.
    await seedPgliteDataDir(path.join(dataDir, 'pgdata'));
    collector = createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c) => chunks.push(c));
      req.on('end', () => {
        received.push({ url: req.url ?? '', contentType: String(req.headers['content-type']), body: Buffer.concat(chunks) });
        res.writeHead(200, { 'content-type': 'application/x-protobuf' }).end();
      });
    });
    await new Promise<void>((resolve) => collector.listen(0, '127.0.0.1', resolve));
    const address = collector.address();
    endpoint = `http://127.0.0.1:${typeof address === 'object' && address ? address.port : 0}`;
  });
  afterAll(async () => {
    await new Promise((r) => collector?.close(r));
    rmSync(dataDir, { recursive: true, force: true });
  });

  it('exports the request spans on shutdown, with the service name from OTEL_SERVICE_NAME', async () => {
    const child = spawn(process.execPath, ['--import', 'tsx', 'src/cli.ts', 'start'], {
      env: {
        PATH: process.env.PATH,
        PORT: '0',
        LOG_LEVEL: 'info',
        PLINTH_DATA_DIR: dataDir,
        OTEL_EXPORTER_OTLP_ENDPOINT: endpoint,
        OTEL_SERVICE_NAME: 'plinth-otel-test',
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stderr.on('data', (c) => (stderr += c));
    const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
    try {
      const url = await new Promise<string>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`not listening after 100 s: ${stdout} ${stderr}`)), 100_000);
        child.stdout.on('data', (c) => {
          stdout += c;
          const line = stdout.split('\n').find((l) => l.includes('Plinth is listening'));
          if (line) {
            clearTimeout(timer);
            resolve(JSON.parse(line).url);
          }
        });
        child.on('exit', () => reject(new Error(`exited early: ${stderr}`)));
      });
      const res = await fetch(`${url}/v1/otel-probe-route`, { headers: { traceparent: '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01' } });
      expect(res.status).toBe(404);
      // The log line of that request carries its trace id.
      await new Promise((r) => setTimeout(r, 200));
      const logged = stdout.split('\n').find((l) => l.includes('"request completed"') && l.includes('"status":404'));
      expect(logged).toContain('"traceId":"0af7651916cd43dd8448eb211c80319c"');
    } finally {
      child.kill('SIGTERM');
    }
    expect(await exited).toBe(0);

    const traces = received.filter((r) => r.url === '/v1/traces');
    expect(traces.length).toBeGreaterThan(0);
    expect(traces[0]!.contentType).toBe('application/x-protobuf');
    const all = Buffer.concat(traces.map((t) => t.body));
    // OTLP protobuf carries ids as raw bytes and strings as UTF-8.
    expect(all.includes(Buffer.from('0af7651916cd43dd8448eb211c80319c', 'hex'))).toBe(true);
    expect(all.includes(Buffer.from('plinth-otel-test'))).toBe(true);
    expect(all.includes(Buffer.from('/v1/otel-probe-route'))).toBe(true);
  }, 150_000); // `plinth start` under tsx is slow on a loaded 2-core machine
});
