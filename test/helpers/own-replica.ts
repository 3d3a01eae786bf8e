import { execFile } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { asPostgres, freePort, PG_BIN, postgresHandle, startOwnPostgres, type OwnPostgres } from './own-services.ts';

const run = promisify(execFile);

export interface OwnReplicaPair {
  primary: OwnPostgres;
  replica: OwnPostgres;
  destroy(): Promise<void>;
}

/**
 * A private primary and a streaming hot standby cloned from it (pg_basebackup -R), on free loopback ports
 * in temp directories — never bench/cluster's fixed ports. Services runs only (spawns two servers).
 */
export async function startOwnReplicaPair(): Promise<OwnReplicaPair> {
  const primary = await startOwnPostgres();
  const port = await freePort();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'plinth-replica-'));
  const data = path.join(dir, 'data');
  if (process.getuid?.() === 0) await run('chown', ['-R', 'postgres', dir]);
  try {
    await run(...asPostgres(`${PG_BIN}/pg_basebackup`, ['-h', '127.0.0.1', '-p', String(primary.port), '-U', 'postgres', '-D', data, '-R', '-X', 'stream', '--no-sync']));
  } catch (err) {
    await primary.destroy();
    throw err;
  }
  const replica = postgresHandle(dir, data, port, '-c hot_standby=on');
  await replica.start();
  return {
    primary,
    replica,
    async destroy() {
      await replica.destroy();
      await primary.destroy();
    },
  };
}
