import { execFile, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import pg from 'pg';
import { freePort } from './own-services.ts';

/**
 * The production shape on loopback, for the tests that follow docs/production.md: a private Postgres that
 * checks passwords (the shared one trusts every local login, so a wrong password would pass) and PgBouncer
 * in transaction pooling in front of it. Never the shared 5432.
 */
const run = promisify(execFile);
const PG_BIN = '/usr/lib/postgresql/15/bin';
const PGBOUNCER = ['/usr/sbin/pgbouncer', '/usr/bin/pgbouncer'].find((p) => fs.existsSync(p));

export const havePostgresBinaries = fs.existsSync(`${PG_BIN}/initdb`) && fs.existsSync(`${PG_BIN}/pg_ctl`);
export const havePgBouncer = PGBOUNCER !== undefined && spawnSync(PGBOUNCER, ['--version']).status === 0;
export const OWNER_PASSWORD = 'owner-password-for-tests-only';

// initdb, postgres and pgbouncer refuse to run as root: run them as the postgres user when we are root.
function asPostgres(cmd: string, args: string[]): [string, string[]] {
  return process.getuid?.() === 0 ? ['runuser', ['-u', 'postgres', '--', cmd, ...args]] : [cmd, args];
}

function tempDir(prefix: string): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  fs.chmodSync(dir, 0o777);
  return dir;
}

export interface ScramPostgres {
  port: number;
  /** Owner (superuser) login with its password, straight to Postgres. */
  ownerUrl(database?: string): string;
  destroy(): Promise<void>;
}

/** A Postgres whose TCP logins need a SCRAM password, as in production. */
export async function startScramPostgres(): Promise<ScramPostgres> {
  const port = await freePort();
  const dir = tempDir('plinth-pgscram-');
  const data = path.join(dir, 'data');
  const pwfile = path.join(dir, 'pw');
  fs.writeFileSync(pwfile, OWNER_PASSWORD);
  if (process.getuid?.() === 0) await run('chown', ['-R', 'postgres', dir]);
  await run(...asPostgres(`${PG_BIN}/initdb`, ['-D', data, '-U', 'postgres', '--pwfile', pwfile, '--auth-local=trust', '--auth-host=scram-sha-256', '-E', 'UTF8', '--no-sync']));
  const opts = `-p ${port} -k ${dir} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=60`;
  await run(...asPostgres(`${PG_BIN}/pg_ctl`, ['-D', data, '-o', opts, '-l', path.join(dir, 'log'), '-w', '-t', '30', 'start']));
  return {
    port,
    ownerUrl: (database = 'postgres') => `postgres://postgres:${OWNER_PASSWORD}@127.0.0.1:${port}/${database}`,
    async destroy() {
      await run(...asPostgres(`${PG_BIN}/pg_ctl`, ['-D', data, '-m', 'immediate', '-w', 'stop'])).catch(() => undefined);
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}

export interface PgBouncer {
  port: number;
  url(user: string, password: string, database: string): string;
  /** Rewrites the auth file from Postgres' SCRAM verifiers (after a password change) and reloads. */
  syncUsers(): Promise<void>;
  destroy(): Promise<void>;
}

/**
 * PgBouncer in transaction pooling with the config deploy/pgbouncer/pgbouncer.ini documents, its auth
 * file filled from pg_authid the way docs/production.md says (SCRAM verifiers, no cleartext on disk).
 */
export async function startPgBouncer(ownerUrl: string, pgPort: number, opts: { poolSize?: number } = {}): Promise<PgBouncer> {
  if (!PGBOUNCER) throw new Error('pgbouncer is not installed');
  const port = await freePort();
  const dir = tempDir('plinth-pgb-');
  const userlist = path.join(dir, 'userlist.txt');
  const template = fs.readFileSync(new URL('../../deploy/pgbouncer/pgbouncer.ini', import.meta.url), 'utf8');
  // The sample's [databases] points at a host name; here the same file points at the loopback server.
  const ini = template
    .replace(/^\* = .*$/m, `* = host=127.0.0.1 port=${pgPort}`)
    .replace(/^listen_addr = .*$/m, 'listen_addr = 127.0.0.1')
    .replace(/^listen_port = .*$/m, `listen_port = ${port}`)
    .replace(/^auth_file = .*$/m, `auth_file = ${userlist}`)
    .replace(/^default_pool_size = .*$/m, `default_pool_size = ${opts.poolSize ?? 4}`)
    .concat(`\nunix_socket_dir = ${dir}\nlogfile = ${path.join(dir, 'log')}\npidfile = ${path.join(dir, 'pid')}\n`);
  fs.writeFileSync(path.join(dir, 'pgbouncer.ini'), ini);
  const syncUsers = async () => {
    const c = new pg.Client({ connectionString: ownerUrl });
    await c.connect();
    try {
      const { rows } = await c.query<{ line: string }>(
        `select format('"%s" "%s"', rolname, rolpassword) as line from pg_authid where rolname in ('plinth_app') and rolpassword is not null`,
      );
      fs.writeFileSync(userlist, rows.map((r) => r.line).join('\n') + '\n');
      fs.chmodSync(userlist, 0o644);
    } finally {
      await c.end();
    }
  };
  await syncUsers();
  await run(...asPostgres(PGBOUNCER, ['-d', path.join(dir, 'pgbouncer.ini')]));
  await waitFor(() => fs.existsSync(path.join(dir, 'pid')), 5_000);
  const pid = () => Number(fs.readFileSync(path.join(dir, 'pid'), 'utf8').trim());
  return {
    port,
    url: (user, password, database) => `postgres://${user}:${encodeURIComponent(password)}@127.0.0.1:${port}/${database}`,
    async syncUsers() {
      await syncUsers();
      process.kill(pid(), 'SIGHUP');
      await new Promise((r) => setTimeout(r, 200));
    },
    async destroy() {
      try {
        process.kill(pid(), 'SIGTERM');
      } catch {
        // already gone
      }
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}

async function waitFor(ok: () => boolean, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!ok()) {
    if (Date.now() > deadline) throw new Error('timed out');
    await new Promise((r) => setTimeout(r, 50));
  }
}
