/**
 * The fault suite's scenarios (#18 "A lasting net"). Each is bounded, runs on loopback against the local
 * cluster, and returns the invariants it checks (each must be 0) and the figures it measured.
 */
import { Redis } from 'ioredis';
import { freePort, sleep } from '../lib/processes.ts';
import { plinthEnv, PORTS, spawnPlinth, startApi, writeState } from './cluster.ts';
import {
  count, idempotentWriter, newWriteStats, publish, round1, startExtraApi, startProbeWorker, verifyWrites, waitUntil,
  type Proc, type Scenario, type SuiteContext,
} from './suite-lib.ts';
import { startTcpProxy } from './tcp-proxy.ts';

const apiBases = (ctx: SuiteContext) => ctx.state.apis.map((a) => `http://127.0.0.1:${a.port}`);

async function restartWorker(ctx: SuiteContext, i: number): Promise<void> {
  const w = ctx.state.workers[i]!;
  ctx.state.workers[i] = { name: w.name, pid: spawnPlinth(w.name, ['worker'], plinthEnv(ctx.state)) };
  writeState(ctx.state);
}

async function writeInvariants(ctx: SuiteContext, marker: string, stats: ReturnType<typeof newWriteStats>) {
  const v = await verifyWrites(ctx.pg, marker, stats);
  return {
    invariants: [
      { id: 'keys-with-2+-resources', description: 'Idempotency-Keys that produced more than one task', value: v.keysWithDuplicates + stats.idMismatches },
      { id: 'acknowledged-lost', description: 'acknowledged task ids missing from the database', value: v.acknowledgedLost },
    ],
    figures: {
      keys: stats.acks.length + stats.gaveUp, acknowledged: stats.acks.length, attempts: stats.attempts, stored: v.stored,
      extraResources: v.extraResources, gaveUp: stats.gaveUp, outcomes: JSON.stringify(stats.byOutcome),
    },
  };
}

/** kill -9 of API instances and of the worker while writers retry one key on both instances. */
const killDuringWrites: Scenario = {
  name: 'kill9-idempotent-writes',
  what: 'kill -9 API 1, the worker, API 2 (repeatedly in the long run) while 12-16 writers retry each Idempotency-Key on both instances (a quarter of the keys sent to both at once)',
  async run(ctx) {
    const writers = ctx.quick ? 12 : 16;
    const marker = `k9${ctx.run}`;
    const stats = newWriteStats();
    let running = true;
    const load = Array.from({ length: writers }, () =>
      idempotentWriter({ bases: apiBases(ctx), tenant: ctx.tenant, projectId: ctx.projectId, marker, running: () => running, stats, timeoutMs: 10_000, dualEvery: 4 }),
    );
    const started = Date.now();
    const kills: string[] = [];
    const plan = ctx.quick ? ['api', 'worker', 'api'] : ['api', 'worker', 'api', 'worker', 'api', 'api', 'worker'];
    let apiTurn = 0;
    await sleep(3_000);
    for (const target of plan) {
      if (target === 'api') {
        const i = apiTurn++ % ctx.state.apis.length;
        process.kill(ctx.state.apis[i]!.pid, 'SIGKILL');
        kills.push(`${ctx.state.apis[i]!.name}@${round1((Date.now() - started) / 1000)}s`);
        await sleep(500);
        ctx.state.apis[i] = await startApi(ctx.state, i);
        writeState(ctx.state);
      } else {
        process.kill(ctx.state.workers[0]!.pid, 'SIGKILL');
        kills.push(`worker-1@${round1((Date.now() - started) / 1000)}s`);
        await sleep(300);
        await restartWorker(ctx, 0);
      }
      await sleep(ctx.quick ? 2_000 : 6_000);
    }
    // Writers finish the key in hand (bounded by their own 60 s give-up).
    running = false;
    await Promise.all(load);
    const res = await writeInvariants(ctx, marker, stats);
    return { ...res, figures: { ...res.figures, writers, kills: kills.join(' ') } };
  },
};

/** Requests wait on a row lock held longer than the idempotency lease, with every pool connection taken. */
const slowTransactions: Scenario = {
  name: 'slow-tx-pool-exhaustion',
  what: 'a transaction holds the project row lock (FOR UPDATE) longer than the 5 s lease while 16 writers (2 s client timeout, retried on the other instance with the same key) fill both API pools (10 connections each)',
  async run(ctx) {
    const writers = 16;
    const marker = `st${ctx.run}`;
    const stats = newWriteStats();
    const holdMs = ctx.quick ? 8_000 : 12_000;
    const holds = ctx.quick ? 1 : 2;
    const stopAt = Date.now() + 3_000 + holds * (holdMs + 3_000);
    const load = Array.from({ length: writers }, () =>
      idempotentWriter({ bases: apiBases(ctx), tenant: ctx.tenant, projectId: ctx.projectId, marker, running: () => Date.now() < stopAt, stats, timeoutMs: 2_000 }),
    );
    let waitingMax = 0;
    await sleep(2_000);
    for (let h = 0; h < holds; h++) {
      const client = await ctx.pg.connect();
      try {
        await client.query('begin');
        await client.query('select id from projects where id = $1 for update', [ctx.projectId]);
        const until = Date.now() + holdMs;
        while (Date.now() < until) {
          await sleep(500);
          const waiting = await count(ctx.pg, `select count(*)::int as n from pg_stat_activity where wait_event_type = 'Lock' and datname = current_database()`);
          waitingMax = Math.max(waitingMax, waiting);
        }
        await client.query('commit');
      } finally {
        client.release();
      }
      await sleep(3_000);
    }
    await Promise.all(load);
    const res = await writeInvariants(ctx, marker, stats);
    return { ...res, figures: { ...res.figures, writers, holdMs, holds, maxRequestsWaitingOnTheLock: waitingMax } };
  },
};

/** Deliveries per consumer when an old worker (consumer a only) relays beside a new one (a and b). */
const mixedVersions: Scenario = {
  name: 'mixed-version-workers',
  what: 'an "old" probe worker knowing consumer a relays while events are published; a "new" one (a and b) starts mid-run (long run: the old one is also killed -9 and started again, still old)',
  async run(ctx) {
    const event = `fault.mixed_${ctx.run}`;
    const a = `fault.mixed_a_${ctx.run}`;
    const b = `fault.mixed_b_${ctx.run}`;
    const total = ctx.quick ? 600 : 3_000;
    const batches = ctx.quick ? 30 : 100;
    const procs: Proc[] = [];
    // Jobs held by a worker killed -9 are handed out again after JOBS_STALLED_MS (default 30 s).
    const stalled = { JOBS_STALLED_MS: '5000' };
    try {
      procs.push(await startProbeWorker(ctx, 'probe-old', { FAULT_EVENT: event, FAULT_CONSUMERS: a, ...stalled }));
      const ids: string[] = [];
      let newStarted: Promise<Proc> | undefined;
      for (let i = 0; i < batches; i++) {
        ids.push(...(await publish(ctx.pg, event, total / batches)));
        if (i === Math.floor(batches / 4)) newStarted = startProbeWorker(ctx, 'probe-new', { FAULT_EVENT: event, FAULT_CONSUMERS: `${a},${b}`, ...stalled });
        // The last third is published with both versions running (relayed by either), the rest before b existed.
        if (i === Math.floor((batches * 2) / 3)) procs.push(await newStarted!);
        if (!ctx.quick && i === Math.floor((batches * 5) / 6)) {
          await procs[0]!.stop('SIGKILL');
          procs[0] = await startProbeWorker(ctx, 'probe-old-2', { FAULT_EVENT: event, FAULT_CONSUMERS: a, ...stalled });
        }
        await sleep(100);
      }
      const undelivered = async () => {
        const { rows } = await ctx.pg.query<{ consumer: string; n: number }>(
          `select c.consumer, count(*) filter (where not exists (select 1 from fault_effects f where f.consumer = c.consumer and f.event_id = e.id))::int as n
             from unnest($1::uuid[]) as e(id) cross join (values ($2), ($3)) as c(consumer) group by c.consumer`,
          [ids, a, b],
        );
        return Object.fromEntries(rows.map((r) => [r.consumer, r.n])) as Record<string, number>;
      };
      const t0 = Date.now();
      const left = await waitUntil(undelivered, (m) => (m[a] ?? 1) + (m[b] ?? 1) === 0, ctx.quick ? 45_000 : 120_000, 500);
      // How much the new worker had to catch up on: events that occurred before consumer b was first declared.
      const beforeB = await count(ctx.pg,
        `select count(*)::int as n from outbox where id = any($1::uuid[]) and occurred_at < (select registered_at from job_consumers where consumer = $2)`, [ids, b]);
      const duplicates = await count(ctx.pg,
        `select count(*)::int as n from (select 1 from fault_effects where consumer in ($1, $2) group by consumer, event_id having count(*) > 1) d`, [a, b]);
      return {
        invariants: [
          { id: 'undelivered-consumer-a', description: `events with no effect for consumer a (known to every worker)`, value: left[a] ?? total },
          { id: 'undelivered-consumer-b', description: `events with no effect for consumer b (known only to the new worker)`, value: left[b] ?? total },
          { id: 'duplicate-effects', description: 'a consumer\'s effect recorded twice for one event', value: duplicates },
        ],
        figures: { events: total, eventsBeforeConsumerBExisted: beforeB, drainSecAfterPublish: round1((Date.now() - t0) / 1000) },
      };
    } finally {
      await Promise.all(procs.map((p) => p.stop()));
      await ctx.pg.query('delete from job_consumers where consumer in ($1, $2)', [a, b]);
    }
  },
};

/** BullMQ jobs whose data survives while their queue entries are gone; the sweeper must repair them. */
const lostQueueEntries: Scenario = {
  name: 'lost-queue-entries',
  what: 'deliveries are dispatched to a queue nobody consumes yet; its wait list is deleted in Redis (job records kept); then a worker for it starts with JOBS_SWEEP_AFTER_MS=2 s (long: 5 s)',
  async run(ctx) {
    const event = `fault.lost_${ctx.run}`;
    const consumer = `fault.lost_c_${ctx.run}`;
    const total = ctx.quick ? 300 : 2_000;
    const sweepAfterMs = ctx.quick ? 2_000 : 5_000;
    const redis = new Redis(ctx.state.redisUrl, { lazyConnect: true, maxRetriesPerRequest: 2 });
    let worker: Proc | undefined;
    try {
      await redis.connect();
      // As if a worker knowing the consumer had started once (the relays fan out to it from now on).
      await ctx.pg.query(`insert into job_consumers (consumer, event_name, max_attempts) values ($1, $2, 5)`, [consumer, event]);
      const ids = await publish(ctx.pg, event, total);
      const prefix = 'plinth-cluster:bull';
      const queued = await waitUntil(() => redis.llen(`${prefix}:${consumer}:wait`), (n) => n >= total, 30_000, 200);
      const records = (await redis.keys(`${prefix}:${consumer}:*`)).filter((k) => /:[0-9a-f-]{36}$/.test(k)).length;
      // The fault: every queue entry gone, every job record kept (what eviction or a partial flush leaves).
      await redis.del(`${prefix}:${consumer}:wait`, `${prefix}:${consumer}:prioritized`, `${prefix}:${consumer}:delayed`);
      const t0 = Date.now();
      worker = await startProbeWorker(ctx, 'probe-lost', { FAULT_EVENT: event, FAULT_CONSUMERS: consumer, JOBS_SWEEP_AFTER_MS: String(sweepAfterMs) });
      // Detection takes sweepAfterMs plus a sweep period; the rest of the window is for working through the
      // backlog on a busy machine. The finding this guards against never drained at all (re-adds were no-ops).
      const windowMs = sweepAfterMs * 3 + (ctx.quick ? 30_000 : 60_000);
      const pending = () => count(ctx.pg, `select count(*)::int as n from job_deliveries where consumer = $1 and status <> 'done'`, [consumer]);
      const left = await waitUntil(pending, (n) => n === 0, windowMs - (Date.now() - t0), 250);
      const repairedInSec = round1((Date.now() - t0) / 1000);
      const effects = await count(ctx.pg, 'select count(distinct event_id)::int as n from fault_effects where consumer = $1 and event_id = any($2::uuid[])', [consumer, ids]);
      return {
        invariants: [
          { id: 'pending-after-sweeper-window', description: `deliveries not done ${windowMs / 1000} s after the worker started`, value: left },
          { id: 'events-without-effect', description: 'events whose effect never happened', value: total - effects },
        ],
        figures: { events: total, queueEntriesDeleted: queued, jobRecordsKept: records, sweepAfterMs, secondsToAllDone: repairedInSec },
      };
    } finally {
      await worker?.stop();
      await ctx.pg.query('delete from job_consumers where consumer = $1', [consumer]);
      redis.disconnect();
    }
  },
};

/** Workers whose clocks disagree run one schedule; each occurrence must run once. */
const clockSkew: Scenario = {
  name: 'clock-skew-schedules',
  what: 'probe workers whose clocks are off by PLINTH_CLOCK_SKEW_MS (quick: -1500 ms and +300 ms; long: -2000, -300, +2000 ms) run one everyMs=700 schedule',
  async run(ctx) {
    const schedule = `fault.tick_${ctx.run}`;
    // Not a multiple of the workers' 1 s tick, so which worker finds an occurrence due first keeps changing.
    const period = 700;
    const skews = ctx.quick ? [-1_500, 300] : [-2_000, -300, 2_000];
    // Workers tick every second, so one of them can win every occurrence for as long as their phases hold:
    // each gets a stretch alone (started one after the other, stopped one after the other) and they all
    // compete in between.
    const stepSec = ctx.quick ? 4 : 10;
    const procs: Proc[] = [];
    const t0 = Date.now();
    try {
      for (const [i, skew] of skews.entries()) {
        procs.push(await startProbeWorker(ctx, `probe-skew-${i + 1}`, { FAULT_SCHEDULE: `${schedule}:${period}`, PLINTH_CLOCK_SKEW_MS: String(skew) }));
        await sleep(stepSec * 1000);
      }
      for (const p of procs.slice(0, -1)) {
        await p.stop();
        await sleep(stepSec * 1000);
      }
    } finally {
      await Promise.all(procs.map((p) => p.stop()));
    }
    const runSec = round1((Date.now() - t0) / 1000);
    const { rows } = await ctx.pg.query<{ runs: number; distinct_at: number; close: number; runners: number; min_gap_ms: number | null }>(
      `with t as (select scheduled_at, runner, scheduled_at - lag(scheduled_at) over (order by scheduled_at, id) as gap from fault_ticks where schedule = $1)
       select count(*)::int as runs, count(distinct scheduled_at)::int as distinct_at, count(distinct runner)::int as runners,
              count(*) filter (where gap < make_interval(secs => $2::float8 / 1000))::int as close,
              (extract(epoch from min(gap)) * 1000)::float8 as min_gap_ms
         from t`,
      [schedule, period],
    );
    const r = rows[0]!;
    await ctx.pg.query('delete from job_schedules where name = $1', [schedule]);
    return {
      invariants: [
        { id: 'duplicate-occurrences', description: `runs of one occurrence beyond the first, or runs closer together than the ${period} ms period`, value: r.close },
      ],
      figures: { skewsMs: skews.join(' '), seconds: runSec, runs: r.runs, distinctOccurrences: r.distinct_at, runnersThatWon: r.runners, minGapMs: round1(r.min_gap_ms ?? 0) },
    };
  },
};

/** Stated bounds the partition scenario checks (README, "Project and task reads" and "Accounts"). */
export const STALE_BOUND_MS = 10_000;
// The session cache's maximum age (CACHE_L1_TTL_MS, 5 s): how long another instance may still accept a revoked token.
export const REVOCATION_BOUND_MS = 5_000;

async function call(base: string, method: string, path: string, token: string, body?: unknown): Promise<{ status: number; body: any }> {
  try {
    const res = await fetch(`${base}${path}`, {
      method,
      headers: { authorization: `Bearer ${token}`, ...(body ? { 'content-type': 'application/json' } : {}) },
      body: body ? JSON.stringify(body) : undefined,
      signal: AbortSignal.timeout(10_000),
    });
    const text = await res.text();
    return { status: res.status, body: text ? JSON.parse(text) : undefined };
  } catch (err) {
    return { status: 0, body: (err as Error).message };
  }
}

/** The writing/revoking instance's Redis link is partitioned; another instance serves reads and tokens. */
const redisPartition: Scenario = {
  name: 'redis-partition',
  what: 'two extra API instances, each reaching Redis through its own TCP proxy; the proxy of instance A is blackholed while A updates a task / revokes a session, and instance B is read every 100 ms',
  async run(ctx) {
    const proxies = [await startTcpProxy('127.0.0.1', PORTS.redis), await startTcpProxy('127.0.0.1', PORTS.redis)];
    const ports = [await freePort(), await freePort()];
    const procs: Proc[] = [];
    try {
      procs.push(...(await Promise.all(ports.map((port, i) => startExtraApi(ctx, `api-p${i + 1}`, port, { REDIS_URL: proxies[i]!.url })))));
      const [A, B] = ports.map((p) => `http://127.0.0.1:${p}`) as [string, string];
      const { orgId, token } = ctx.tenant;
      const created = await call(A, 'POST', `/v1/orgs/${orgId}/projects/${ctx.projectId}/tasks`, token, { title: `part-${ctx.run}-0` });
      if (created.status !== 201 && created.status !== 200) throw new Error(`create task answered ${created.status}`);
      const taskPath = `/v1/orgs/${orgId}/tasks/${created.body.id}`;

      // Stale reads: a read-through entry on B, then an update through A while A cannot reach Redis.
      const cacheRounds = ctx.quick ? 2 : 4;
      const partitionMs = ctx.quick ? 3_000 : 8_000;
      let staleBeyond = 0;
      let maxStaleMs = 0;
      let staleReads = 0;
      let maxPatchMs = 0;
      let cachedBeforeUpdate = 0;
      const redis = new Redis(ctx.state.redisUrl, { maxRetriesPerRequest: 2 });
      const entryKey = `plinth-cluster:tenant:${orgId}:tasks:${created.body.id}`;
      for (let r = 1; r <= cacheRounds; r++) {
        for (const base of [B, B, A]) await call(base, 'GET', taskPath, token);
        // The round bites only if B really holds the old row in Redis (a read-through entry, not a marker).
        if (JSON.parse((await redis.get(entryKey)) ?? '{}').d) cachedBeforeUpdate++;
        proxies[0]!.cut('blackhole');
        const title = `part-${ctx.run}-${r}`;
        // B is read continuously from before the update: a read racing it must not outlive the bound either.
        let ackAt = 0;
        let lastStaleAt = 0;
        let stop = false;
        const reader = (async () => {
          while (!stop) {
            const res = await call(B, 'GET', taskPath, token);
            const now = Date.now();
            if (ackAt && res.status === 200 && res.body?.title !== title) {
              staleReads++;
              lastStaleAt = now;
              if (now - ackAt > STALE_BOUND_MS) staleBeyond++;
            }
            await sleep(100);
          }
        })();
        const sent = Date.now();
        const patched = await call(A, 'PATCH', taskPath, token, { title });
        if (patched.status !== 200) throw new Error(`PATCH during the partition answered ${patched.status} ${JSON.stringify(patched.body).slice(0, 200)}`);
        ackAt = Date.now();
        maxPatchMs = Math.max(maxPatchMs, ackAt - sent);
        const healAt = ackAt + partitionMs;
        // Watched past the bound, so a stale entry that outlives it is seen (and counted) in the quick run too.
        const watchUntil = Math.max(healAt + 2_000, ackAt + STALE_BOUND_MS + 1_000);
        while (Date.now() < watchUntil) {
          if (proxies[0]!.state !== 'open' && Date.now() >= healAt) proxies[0]!.heal();
          await sleep(50);
        }
        proxies[0]!.heal();
        stop = true;
        await reader;
        if (lastStaleAt) maxStaleMs = Math.max(maxStaleMs, lastStaleAt - ackAt);
      }

      redis.disconnect();

      // Revocation: B has the session cached; A revokes it while cut off from Redis.
      const revocationPartitions = ctx.quick ? [REVOCATION_BOUND_MS + 3_000] : [8_000, 30_000];
      let acceptedBeyond = 0;
      const acceptedFor: number[] = [];
      for (const partMs of revocationPartitions) {
        const login = await call(B, 'POST', '/v1/auth/login', '', { email: ctx.tenant.email, password: ctx.tenant.password });
        const token2 = login.body?.token as string;
        if (!token2) throw new Error(`login answered ${login.status}`);
        const sessions = await call(B, 'GET', '/v1/me/sessions', token2);
        const sid = (sessions.body?.data ?? []).find((s: { current?: boolean }) => s.current)?.id;
        if (!sid) throw new Error('no current session in GET /v1/me/sessions');
        for (const base of [B, A]) await call(base, 'GET', '/v1/me', token2);
        proxies[0]!.cut('blackhole');
        const revoked = await call(A, 'DELETE', `/v1/me/sessions/${sid}`, token);
        if (revoked.status !== 204) throw new Error(`revocation during the partition answered ${revoked.status}`);
        const ackAt = Date.now();
        const healAt = ackAt + partMs;
        let lastAccepted = 0;
        let refusedSince = 0;
        for (;;) {
          const now = Date.now();
          if (proxies[0]!.state !== 'open' && now >= healAt) proxies[0]!.heal();
          const res = await call(B, 'GET', '/v1/me', token2);
          if (res.status === 200) {
            lastAccepted = Date.now();
            refusedSince = 0;
            if (lastAccepted - ackAt > REVOCATION_BOUND_MS) acceptedBeyond++;
          } else if (res.status === 401) {
            refusedSince ||= Date.now();
          }
          // Done once B has refused for 2 s and the link is back, or well past the bound.
          if ((refusedSince && Date.now() - refusedSince > 2_000 && Date.now() >= healAt) || Date.now() - ackAt > REVOCATION_BOUND_MS + 5_000) break;
          await sleep(200);
        }
        proxies[0]!.heal();
        acceptedFor.push(lastAccepted ? round1((lastAccepted - ackAt) / 1000) : 0);
      }
      return {
        invariants: [
          { id: 'stale-reads-beyond-bound', description: `reads on B returning the old task more than ${STALE_BOUND_MS / 1000} s after the update was acknowledged`, value: staleBeyond },
          { id: 'revoked-accepted-beyond-bound', description: `requests on B accepted with a revoked token more than ${REVOCATION_BOUND_MS / 1000} s after the revocation`, value: acceptedBeyond },
        ],
        figures: {
          cacheRounds, roundsWithTheOldRowCachedInRedis: cachedBeforeUpdate, partitionSec: partitionMs / 1000, staleReadsAfterAck: staleReads, maxStaleSec: round1(maxStaleMs / 1000), maxPatchMs,
          revocationPartitionsSec: revocationPartitions.map((p) => p / 1000).join(' '), revokedTokenAcceptedForSec: acceptedFor.join(' '),
        },
      };
    } finally {
      await Promise.all(procs.map((p) => p.stop()));
      await Promise.all(proxies.map((p) => p.close()));
    }
  },
};

export const SCENARIOS: Scenario[] = [killDuringWrites, slowTransactions, mixedVersions, lostQueueEntries, clockSkew, redisPartition];
