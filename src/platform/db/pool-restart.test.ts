import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openDatabase, type Database } from './database.ts';

// Restarts a Postgres, so it uses its own throwaway server on a free loopback port (never the shared one).
const BIN = process.env.PG_BIN ?? '/usr/lib/postgresql/15/bin';
const available = fs.existsSync(path.join(BIN, 'initdb')) && fs.existsSync(path.join(BIN, 'pg_ctl'));
const asRoot = process.getuid?.() === 0;

function pgTool(tool: string, args: string[]): void {
  const [cmd, argv] = asRoot ? ['runuser', ['-u', 'postgres', '--', path.join(BIN, tool), ...args]] : [path.join(BIN, tool), args];
  execFileSync(cmd, argv, { stdio: 'ignore', timeout: 60_000 });
}

async function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = net.createServer().listen(0, '127.0.0.1', () => {
      const port = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(port));
    });
  });
}

describe.skipIf(!available)('pg pool across a Postgres restart (own server)', () => {
  let dir: string;
  let dataDir: string;
  let db: Database;
  const ctl = (action: string) => pgTool('pg_ctl', ['-D', dataDir, '-l', path.join(dir, 'pg.log'), '-w', '-t', '60', ...(action === 'stop' || action === 'restart' ? ['-m', 'fast'] : []), action]);

  beforeAll(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'plinth-pg-restart-'));
    fs.chmodSync(dir, 0o777);
    dataDir = path.join(dir, 'data');
    const port = await freePort();
    pgTool('initdb', ['-D', dataDir, '-U', 'postgres', '--auth=trust', '--no-sync']);
    fs.appendFileSync(path.join(dataDir, 'postgresql.conf'), `\nport = ${port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '${dir}'\nfsync = off\n`);
    ctl('start');
    db = await openDatabase({ databaseUrl: `postgres://postgres@127.0.0.1:${port}/postgres`, poolMax: 2 });
  });

  afterAll(async () => {
    await db?.close().catch(() => undefined);
    if (dataDir && fs.existsSync(dataDir)) ctl('stop');
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('a transaction holding a connection fails cleanly (no process crash) and the pool recovers', async () => {
    const uncaught: unknown[] = [];
    const onUncaught = (err: unknown) => uncaught.push(err);
    process.on('uncaughtException', onUncaught);
    try {
      let entered!: () => void;
      const inside = new Promise<void>((r) => (entered = r));
      const tx = db.owner.transaction().execute(async (trx) => {
        await sql`select 1`.execute(trx);
        entered();
        // Application work between statements: the connection is checked out but has no query running.
        await new Promise((r) => setTimeout(r, 1500));
        await sql`select 2`.execute(trx);
      });
      const outcome = tx.then(() => 'committed', (err: Error) => `failed: ${err.message}`);
      await inside;
      ctl('restart');
      expect(await outcome).toMatch(/^failed:/);
      await new Promise((r) => setTimeout(r, 200));
      expect(uncaught).toEqual([]);
      // New work gets fresh connections.
      const rows = await sql<{ x: number }>`select 42 as x`.execute(db.owner);
      expect(rows.rows[0]?.x).toBe(42);
      const again = await sql<{ n: number }>`select count(*)::int as n from pg_stat_activity`.execute(db.owner);
      expect(again.rows[0]?.n).toBeGreaterThan(0);
    } finally {
      process.off('uncaughtException', onUncaught);
    }
  });
});
