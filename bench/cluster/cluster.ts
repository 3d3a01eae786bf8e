/**
 * A production-shaped Plinth on loopback, started and stopped by one command:
 *   HAProxy :28080 → N API processes (:28081…) + M worker processes
 *   Postgres primary :25432 with a streaming replica :25433, Redis :26379
 * Every data dir, log and pid file lives under bench/cluster/run/ (gitignored). The shared Postgres
 * (5432) and Redis (6379) are never touched.
 *
 *   npx tsx bench/cluster/cluster.ts up [--apis N] [--workers M]
 *   npx tsx bench/cluster/cluster.ts status
 *   npx tsx bench/cluster/cluster.ts down
 *   npx tsx bench/cluster/cluster.ts faults [--only sigterm-api,kill-redis,restart-postgres]
 */
import { createHash } from 'node:crypto';
import { execFileSync, spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { ROOT, sleep, waitHttp } from '../lib/processes.ts';

export const RUN = path.join(ROOT, 'bench/cluster/run');
const PG_BIN = process.env.PG_BIN ?? '/usr/lib/postgresql/15/bin';
export const PORTS = { lb: 28080, apiBase: 28081, primary: 25432, replica: 25433, redis: 26379 };
const STATE = path.join(RUN, 'state.json');

export interface ClusterState {
  apis: { name: string; port: number; pid: number }[];
  workers: { name: string; pid: number }[];
  /** Processes a fault run started beside the cluster (probe workers, partitioned APIs); `down` stops them too. */
  extras?: { name: string; pid: number }[];
  /** HAProxy servers declared but disabled (maintenance) at start, e.g. a canary slot the deploy drill enables. */
  spares?: { name: string; port: number }[];
  haproxyPid?: number;
  databaseUrl: string;
  replicaUrl: string;
  redisUrl: string;
  lbUrl: string;
  workerRole: boolean;
}

export function readState(): ClusterState | undefined {
  try {
    return JSON.parse(fs.readFileSync(STATE, 'utf8')) as ClusterState;
  } catch {
    return undefined;
  }
}

export function writeState(s: ClusterState): void {
  fs.writeFileSync(STATE, JSON.stringify(s, null, 1));
}

/** Postgres tools refuse to run as root; run them as the postgres OS user when we are root. */
function asPostgres(cmd: string, args: string[], opts: { allowFail?: boolean } = {}): string {
  const root = process.getuid?.() === 0;
  const [bin, argv] = root ? ['runuser', ['-u', 'postgres', '--', cmd, ...args]] : [cmd, args];
  try {
    return execFileSync(bin, argv, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], timeout: 120_000 });
  } catch (err) {
    if (opts.allowFail) return '';
    const e = err as { stderr?: string; message: string };
    throw new Error(`${cmd} ${args.join(' ')} failed: ${e.stderr || e.message}`);
  }
}

function chownPostgres(dir: string): void {
  if (process.getuid?.() === 0) execFileSync('chown', ['-R', 'postgres:postgres', dir]);
}

export function pgCtl(dataDir: string, action: 'start' | 'stop' | 'restart', extra: string[] = []): void {
  const log = path.join(RUN, `${path.basename(dataDir)}.log`);
  asPostgres(`${PG_BIN}/pg_ctl`, ['-D', dataDir, '-l', log, '-w', '-t', '60', ...extra, action], { allowFail: action === 'stop' });
}

function portFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const srv = net.createServer();
    srv.once('error', () => resolve(false));
    srv.listen(port, '127.0.0.1', () => srv.close(() => resolve(true)));
  });
}

export function pidAlive(pid: number | undefined): boolean {
  if (!pid) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

const primaryDir = path.join(RUN, 'pg-primary');
const replicaDir = path.join(RUN, 'pg-replica');

function pgUp(): void {
  fs.mkdirSync(RUN, { recursive: true });
  fs.chmodSync(RUN, 0o777);
  if (!fs.existsSync(path.join(primaryDir, 'PG_VERSION'))) {
    fs.mkdirSync(primaryDir, { recursive: true });
    chownPostgres(primaryDir);
    asPostgres(`${PG_BIN}/initdb`, ['-D', primaryDir, '-U', 'postgres', '--auth=trust', '-E', 'UTF8', '--no-sync']);
    fs.appendFileSync(
      path.join(primaryDir, 'postgresql.conf'),
      [
        `port = ${PORTS.primary}`, `listen_addresses = '127.0.0.1'`, `unix_socket_directories = '${RUN}'`,
        'wal_level = replica', 'max_wal_senders = 5', 'hot_standby = on', 'max_connections = 200',
        'fsync = on', 'synchronous_commit = on', 'shared_buffers = 128MB', '',
      ].join('\n'),
    );
    // Loopback only, trust: a throwaway local cluster. Replication from 127.0.0.1 for the replica.
    fs.writeFileSync(path.join(primaryDir, 'pg_hba.conf'), 'local all all trust\nhost all all 127.0.0.1/32 trust\nhost replication all 127.0.0.1/32 trust\n');
    chownPostgres(primaryDir);
  }
  pgCtl(primaryDir, 'start');
  if (!fs.existsSync(path.join(replicaDir, 'PG_VERSION'))) {
    fs.mkdirSync(replicaDir, { recursive: true });
    chownPostgres(replicaDir);
    fs.rmSync(replicaDir, { recursive: true, force: true });
    asPostgres(`${PG_BIN}/pg_basebackup`, ['-h', '127.0.0.1', '-p', String(PORTS.primary), '-U', 'postgres', '-D', replicaDir, '-R', '-X', 'stream', '--no-sync']);
    fs.appendFileSync(path.join(replicaDir, 'postgresql.conf'), `\nport = ${PORTS.replica}\n`);
    chownPostgres(replicaDir);
  }
  pgCtl(replicaDir, 'start');
}

export function redisUp(): void {
  execFileSync('redis-server', [
    '--port', String(PORTS.redis), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--daemonize', 'yes',
    '--pidfile', path.join(RUN, 'redis.pid'), '--logfile', path.join(RUN, 'redis.log'), '--dir', RUN,
  ]);
}

export function redisPid(): number | undefined {
  try {
    return Number(fs.readFileSync(path.join(RUN, 'redis.pid'), 'utf8').trim()) || undefined;
  } catch {
    return undefined;
  }
}

function cliSupports(command: string, root = ROOT): boolean {
  return new RegExp(`case '${command}'`).test(fs.readFileSync(path.join(root, 'src/cli.ts'), 'utf8'));
}

/** Starts a Plinth process detached from this command (it outlives `up`), logging to run/<name>.log. */
/** Every process this command started; a fault run being torn down stops them all and starts no more. */
const started = new Set<number>();
let refusing = false;

export function trackProcess(pid: number): void {
  if (refusing) {
    process.kill(pid, 'SIGKILL');
    throw new Error('the cluster is being torn down');
  }
  started.add(pid);
}

/** From now on no process is started (a scenario still running during a teardown cannot leave one behind). */
export function stopStartingProcesses(): void {
  refusing = true;
}

/** SIGKILL what this command started and is still running (after `down`, for anything started during it). */
export function killStartedProcesses(): void {
  for (const pid of started) if (pidAlive(pid)) process.kill(pid, 'SIGKILL');
}

/** `root`: the code to run (default this checkout; the deploy drill passes a rebuilt previous release). */
export function spawnPlinth(name: string, args: string[], env: Record<string, string>, root = ROOT): number {
  if (refusing) throw new Error('the cluster is being torn down');
  const out = fs.openSync(path.join(RUN, `${name}.log`), 'a');
  const p = spawn(process.execPath, ['--import', 'tsx', 'src/cli.ts', ...args], {
    cwd: root,
    detached: true,
    stdio: ['ignore', out, out],
    env: { ...process.env, ...env },
  });
  p.unref();
  trackProcess(p.pid!);
  return p.pid!;
}

export function plinthEnv(state: Pick<ClusterState, 'databaseUrl' | 'replicaUrl' | 'redisUrl'>): Record<string, string> {
  return {
    NODE_ENV: 'production', LOG_LEVEL: 'warn', HOST: '127.0.0.1',
    DATABASE_URL: state.databaseUrl, DATABASE_REPLICA_URLS: state.replicaUrl, REDIS_URL: state.redisUrl,
    REDIS_PREFIX: 'plinth-cluster:', MIGRATE_ON_START: 'false',
    // Every instance must hold the same key (webhook secrets are encrypted with it); local cluster only.
    WEBHOOK_SECRET_KEY: createHash('sha256').update(`plinth-local-cluster:${state.databaseUrl}`).digest('hex'),
    RATE_LIMIT_PRINCIPAL: '10000000', RATE_LIMIT_ORG: '10000000', RATE_LIMIT_IP: '10000000', SHUTDOWN_DELAY_MS: '2000', SHUTDOWN_GRACE_MS: '10000', TRUST_PROXY: 'true',
  };
}

export async function startApi(state: ClusterState, i: number, root = ROOT): Promise<{ name: string; port: number; pid: number }> {
  const port = PORTS.apiBase + i;
  const name = `api-${i + 1}`;
  const pid = spawnPlinth(name, ['start'], { ...plinthEnv(state), PORT: String(port), PLINTH_ROLE: 'api' }, root);
  await waitHttp(`http://127.0.0.1:${port}/readyz`, 90_000, () => pidAlive(pid));
  return { name, port, pid };
}

function haproxyConfig(apis: { name: string; port: number }[], spares: { name: string; port: number }[] = []): string {
  return `global
  maxconn 4096
  pidfile ${RUN}/haproxy.pid
  # runtime API (weights, server states): bench/cluster/deploy-drill.ts
  stats socket ${RUN}/haproxy.sock mode 600 level admin
defaults
  mode http
  timeout connect 2s
  timeout client 30s
  timeout server 30s
  option http-server-close
  # a request that could not reach an instance (refused, reset before any response) goes to another one
  retries 3
  option redispatch
  retry-on conn-failure empty-response 503
frontend plinth
  bind 127.0.0.1:${PORTS.lb}
  default_backend apis
backend apis
  balance roundrobin
  option httpchk GET /readyz
  http-check expect status 200
  default-server inter 1s fall 2 rise 2 on-marked-down shutdown-sessions
  # which instance answered (the deploy drill compares a canary with the others)
  http-response set-header x-served-by %[srv_name]
${apis.map((a) => `  server ${a.name} 127.0.0.1:${a.port} check`).join('\n')}
${spares.map((a) => `  server ${a.name} 127.0.0.1:${a.port} check disabled`).join('\n')}
`;
}

export function reloadHaproxy(state: ClusterState): void {
  fs.writeFileSync(path.join(RUN, 'haproxy.cfg'), haproxyConfig(state.apis, state.spares));
  if (pidAlive(state.haproxyPid)) process.kill(state.haproxyPid!, 'SIGTERM');
  execFileSync('haproxy', ['-D', '-f', path.join(RUN, 'haproxy.cfg')]);
  state.haproxyPid = Number(fs.readFileSync(path.join(RUN, 'haproxy.pid'), 'utf8').trim());
}

/** `root`: the code the instances run and migrate with (default this checkout); `spares`: disabled HAProxy servers. */
export async function up(opts: { apis: number; workers: number; root?: string; spares?: { name: string; port: number }[] }): Promise<ClusterState> {
  const root = opts.root ?? ROOT;
  const existing = readState();
  if (existing && pidAlive(existing.haproxyPid)) {
    console.log('cluster already up (run "down" first to restart it)');
    return existing;
  }
  for (const bin of ['haproxy', 'redis-server', `${PG_BIN}/pg_ctl`]) {
    try {
      execFileSync('sh', ['-c', `command -v ${bin}`]);
    } catch {
      throw new Error(`${bin} not found (apt-get install -y haproxy redis-server postgresql-15)`);
    }
  }
  const busy: number[] = [];
  for (const port of [PORTS.lb, PORTS.primary, PORTS.replica, PORTS.redis, ...Array.from({ length: opts.apis }, (_, i) => PORTS.apiBase + i), ...(opts.spares ?? []).map((sp) => sp.port)]) {
    if (!(await portFree(port))) busy.push(port);
  }
  if (busy.length > 0) throw new Error(`ports already in use on 127.0.0.1: ${busy.join(', ')} (another cluster from a different checkout? run its "down")`);
  console.log('postgres primary + streaming replica…');
  pgUp();
  console.log('redis…');
  redisUp();
  const state: ClusterState = {
    apis: [], workers: [],
    databaseUrl: `postgres://postgres@127.0.0.1:${PORTS.primary}/plinth`,
    replicaUrl: `postgres://postgres@127.0.0.1:${PORTS.replica}/plinth`,
    redisUrl: `redis://127.0.0.1:${PORTS.redis}`,
    lbUrl: `http://127.0.0.1:${PORTS.lb}`,
    workerRole: cliSupports('worker', root),
    spares: opts.spares,
  };
  asPostgres(`${PG_BIN}/psql`, ['-h', '127.0.0.1', '-p', String(PORTS.primary), '-U', 'postgres', '-c', 'create database plinth'], { allowFail: true });
  writeState(state);
  // Migrate once before the instances start, so they do not race on the migration lock at boot.
  console.log('migrations…');
  execFileSync(process.execPath, ['--import', 'tsx', 'src/cli.ts', 'migrate'], { cwd: root, env: { ...process.env, ...plinthEnv(state) }, stdio: 'inherit' });
  console.log(`${opts.apis} API processes…`);
  for (let i = 0; i < opts.apis; i++) {
    state.apis.push(await startApi(state, i, root));
    writeState(state);
  }
  if (state.workerRole) {
    for (let i = 0; i < opts.workers; i++) {
      const name = `worker-${i + 1}`;
      state.workers.push({ name, pid: spawnPlinth(name, ['worker'], plinthEnv(state), root) });
    }
  } else if (opts.workers > 0) {
    console.log('no `plinth worker` role in this build: API processes only');
  }
  reloadHaproxy(state);
  writeState(state);
  await waitHttp(`${state.lbUrl}/readyz`, 30_000);
  printStatus(state);
  return state;
}

export async function down(): Promise<void> {
  const state = readState();
  const kill = async (pid: number | undefined) => {
    if (!pidAlive(pid)) return;
    process.kill(pid!, 'SIGTERM');
    for (let i = 0; i < 60 && pidAlive(pid); i++) await sleep(250);
    if (pidAlive(pid)) process.kill(pid!, 'SIGKILL');
  };
  if (state) {
    await kill(state.haproxyPid);
    await Promise.all([...state.apis, ...state.workers, ...(state.extras ?? [])].map((p) => kill(p.pid)));
  }
  await kill(redisPid());
  if (fs.existsSync(path.join(replicaDir, 'PG_VERSION'))) pgCtl(replicaDir, 'stop', ['-m', 'fast']);
  if (fs.existsSync(path.join(primaryDir, 'PG_VERSION'))) pgCtl(primaryDir, 'stop', ['-m', 'fast']);
  fs.rmSync(RUN, { recursive: true, force: true });
  console.log('cluster down; bench/cluster/run removed');
}

function printStatus(state: ClusterState | undefined): void {
  if (!state) {
    console.log('cluster: down');
    return;
  }
  const pg = (port: number) => asPostgres(`${PG_BIN}/pg_isready`, ['-h', '127.0.0.1', '-p', String(port)], { allowFail: true }).trim() || 'down';
  const lag = asPostgres(`${PG_BIN}/psql`, ['-h', '127.0.0.1', '-p', String(PORTS.primary), '-U', 'postgres', '-Atc',
    'select application_name || \' \' || state || \' replay_lag=\' || coalesce(replay_lag::text, \'0\') from pg_stat_replication'], { allowFail: true }).trim();
  const rows = [
    ['haproxy', `${state.lbUrl}`, pidAlive(state.haproxyPid) ? 'up' : 'down'],
    ...state.apis.map((a) => [a.name, `http://127.0.0.1:${a.port}`, pidAlive(a.pid) ? 'up' : 'down']),
    ...state.workers.map((w) => [w.name, '-', pidAlive(w.pid) ? 'up' : 'down']),
    ['postgres primary', `127.0.0.1:${PORTS.primary}`, pg(PORTS.primary)],
    ['postgres replica', `127.0.0.1:${PORTS.replica}`, `${pg(PORTS.replica)}${lag ? ` (${lag})` : ''}`],
    ['redis', state.redisUrl, pidAlive(redisPid()) ? 'up' : 'down'],
  ];
  for (const r of rows) console.log(`${r[0]!.padEnd(18)} ${r[1]!.padEnd(28)} ${r[2]}`);
}

function flag(argv: string[], name: string, fallback: string): string {
  const i = argv.indexOf(name);
  return i >= 0 && argv[i + 1] ? argv[i + 1]! : fallback;
}

async function main(argv: string[]): Promise<number> {
  const [cmd] = argv;
  if (cmd === 'up') {
    await up({ apis: Number(flag(argv, '--apis', '2')), workers: Number(flag(argv, '--workers', '1')) });
    return 0;
  }
  if (cmd === 'down') {
    await down();
    return 0;
  }
  if (cmd === 'status') {
    printStatus(readState());
    return 0;
  }
  if (cmd === 'faults') {
    const { runFaults } = await import('./faults.ts');
    return runFaults(argv.slice(1));
  }
  console.error('usage: cluster.ts up [--apis N] [--workers M] | status | down | faults [--only NAME,…] [--keep]');
  return 2;
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  main(process.argv.slice(2)).then(
    (code) => process.exit(code),
    (err) => {
      console.error((err as Error).message);
      process.exit(1);
    },
  );
}
