import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { pino } from 'pino';
import { describe, expect, it } from 'vitest';
import { loadConfig } from './config.ts';
import { registerHealthRoutes } from './http/health.ts';
import { createHttpServer } from './http/server.ts';
import { createLifecycle } from './lifecycle.ts';

const ROOT = path.resolve(import.meta.dirname, '../..');

describe('graceful shutdown', () => {
  it('flips readiness, finishes the in-flight slow request, then closes in order', async () => {
    const logger = pino({ level: 'silent' });
    const lifecycle = createLifecycle({ logger, graceMs: 5_000, delayMs: 300 });
    const app = await createHttpServer({ config: loadConfig({ NODE_ENV: 'test' }), logger, lifecycle: lifecycle.state });
    registerHealthRoutes(app, { lifecycle: lifecycle.state, checks: {} });
    app.get('/slow', { config: { public: true } }, async () => {
      await new Promise((r) => setTimeout(r, 1_000));
      return { done: true };
    });
    const closed: string[] = [];
    lifecycle.onShutdown({ name: 'pool', close: async () => void closed.push('pool') });
    lifecycle.onShutdown({ name: 'http', close: async () => (await app.close(), void closed.push('http')) });
    await app.listen({ port: 0, host: '127.0.0.1' });
    const { port } = app.server.address() as { port: number };
    const base = `http://127.0.0.1:${port}`;

    expect((await fetch(`${base}/readyz`)).status).toBe(200);
    const slow = fetch(`${base}/slow`);
    await new Promise((r) => setTimeout(r, 100));
    const started = Date.now();
    const exit = lifecycle.shutdown('test');
    const ready = await fetch(`${base}/readyz`);
    expect(ready.status).toBe(503);
    expect((await ready.json()).code).toBe('HEALTH.DRAINING');

    const slowRes = await slow;
    expect(slowRes.status).toBe(200);
    expect(await slowRes.json()).toEqual({ done: true });
    expect(await exit).toBe(0);
    expect(closed).toEqual(['http', 'pool']);
    expect(Date.now() - started).toBeLessThan(5_000);
    await expect(fetch(`${base}/livez`)).rejects.toThrow();
  });

  it('gives up after the grace period and reports a non-zero exit', async () => {
    const lifecycle = createLifecycle({ logger: pino({ level: 'silent' }), graceMs: 200, delayMs: 0 });
    lifecycle.onShutdown({ name: 'stuck', close: () => new Promise(() => {}) });
    const started = Date.now();
    expect(await lifecycle.shutdown('test')).toBe(1);
    expect(Date.now() - started).toBeLessThan(1_000);
  });
});

function runCli(args: string[], env: Record<string, string>) {
  const child = spawn(process.execPath, ['--import', 'tsx', 'src/cli.ts', ...args], {
    cwd: ROOT,
    env: { ...process.env, LOG_LEVEL: 'info', NODE_ENV: 'development', DATABASE_URL: '', REDIS_URL: '', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d) => (stdout += d));
  child.stderr.on('data', (d) => (stderr += d));
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  return { child, exited, out: () => stdout, err: () => stderr };
}

describe('plinth start (real process)', () => {
  it('starts embedded, answers, and exits 0 on SIGTERM within the grace period', async () => {
    const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'plinth-start-'));
    const proc = runCli(['start'], { PORT: '0', PLINTH_DATA_DIR: dataDir, SHUTDOWN_GRACE_MS: '5000' });
    try {
      // Generous: a cold tsx + PGlite start on a loaded 2-core CI machine can take tens of seconds.
      const deadline = Date.now() + 100_000;
      let url: string | undefined;
      while (!url && Date.now() < deadline) {
        const line = proc.out().split('\n').find((l) => l.includes('Plinth is listening'));
        if (line) url = JSON.parse(line).url;
        else await new Promise((r) => setTimeout(r, 100));
      }
      expect(url, proc.err()).toBeDefined();
      expect((await fetch(`${url}/livez`)).status).toBe(200);
      expect(fs.existsSync(path.join(dataDir, 'pgdata'))).toBe(true);
      const t0 = Date.now();
      proc.child.kill('SIGTERM');
      expect(await proc.exited).toBe(0);
      expect(Date.now() - t0).toBeLessThan(5_000);
      expect(proc.out()).toContain('shutdown complete');
    } finally {
      proc.child.kill('SIGKILL');
      fs.rmSync(dataDir, { recursive: true, force: true });
    }
  }, 120_000);

  it('stops at once with one clear line for a bad variable', async () => {
    const proc = runCli(['start'], { PORT: 'eighty' });
    expect(await proc.exited).toBe(1);
    expect(proc.err().trim()).toBe('Invalid configuration: PORT must be an integer between 0 and 65535 (got "eighty")');
  });
});
