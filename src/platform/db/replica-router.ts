import { sql, type Kysely } from 'kysely';
import type { LsnStore } from './read-session.ts';
import type { DB } from './schema.generated.ts';

export interface ReplicaState {
  name: string;
  inRotation: boolean;
  /** Last measured lag (ms); undefined before the first check, -1 when unreachable. */
  lagMs: number | undefined;
  /** Replay position at the last check (bytes). */
  replayLsn: bigint | undefined;
  error?: string;
}

export interface ReplicaRouterOptions {
  primary: Kysely<DB>;
  replicas: Kysely<DB>[];
  /** A replica lagging more than this leaves rotation until it is back under it. */
  maxLagMs: number;
  /** Health/lag check cadence (default 1 s). */
  checkEveryMs?: number;
  lsnStore?: LsnStore;
  metrics?: ReplicaMetrics;
}

/** Where routing is counted (prom-client objects from observability/metrics.ts, given by the composition). */
export interface ReplicaMetrics {
  lag: { set(labels: { replica: string }, seconds: number): void };
  inRotation: { set(labels: { replica: string }, value: number): void };
  reads: { inc(labels: { target: string }): void };
  fallbacks: { inc(labels: { reason: string }): void };
}

const NO_METRICS: ReplicaMetrics = { lag: { set() {} }, inRotation: { set() {} }, reads: { inc() {} }, fallbacks: { inc() {} } };

export type ReadFallbackReason = 'own_write' | 'no_replica' | 'replica_behind' | 'replica_down' | 'lsn_unknown';

/**
 * Replica selection with lag awareness and read-your-writes (the approach of GitLab's database load
 * balancer): a background check measures each replica's replay position and lag against the primary's WAL
 * position; replicas beyond `maxLagMs` or unreachable leave rotation; a principal whose last write is at
 * LSN L reads only from a replica that has replayed past L, else from the primary.
 */
export function createReplicaRouter(opts: ReplicaRouterOptions) {
  const states: ReplicaState[] = opts.replicas.map((_, i) => ({ name: `r${i}`, inRotation: false, lagMs: undefined, replayLsn: undefined }));
  let next = 0;
  let timer: NodeJS.Timeout | undefined;
  let checking: Promise<void> | undefined;
  const m = opts.metrics ?? NO_METRICS;

  async function checkOne(i: number, primaryLsn: bigint | undefined): Promise<void> {
    const s = states[i]!;
    try {
      const { rows } = await sql<{ lsn: string | null; lag_ms: number | null }>`
        select (pg_last_wal_replay_lsn() - '0/0'::pg_lsn)::text as lsn,
               (extract(epoch from now() - pg_last_xact_replay_timestamp()) * 1000)::float8 as lag_ms`.execute(opts.replicas[i]!);
      const replay = rows[0]?.lsn == null ? undefined : BigInt(rows[0].lsn.split('.')[0]!);
      s.replayLsn = replay;
      // Caught up with the primary's position: no lag, however old the last replayed transaction is (an idle
      // primary sends nothing to replay). Otherwise the age of the last replayed transaction.
      const caughtUp = replay !== undefined && primaryLsn !== undefined && replay >= primaryLsn;
      s.lagMs = caughtUp ? 0 : Math.max(0, Number(rows[0]?.lag_ms ?? Number.POSITIVE_INFINITY));
      s.inRotation = replay !== undefined && s.lagMs <= opts.maxLagMs;
      s.error = undefined;
    } catch (err) {
      s.inRotation = false;
      s.lagMs = -1;
      s.error = err instanceof Error ? err.message : String(err);
    }
    m.lag.set({ replica: s.name }, s.lagMs === undefined || s.lagMs < 0 ? -1 : Number.isFinite(s.lagMs) ? s.lagMs / 1000 : 1e9);
    m.inRotation.set({ replica: s.name }, s.inRotation ? 1 : 0);
  }

  async function check(): Promise<void> {
    checking ??= (async () => {
      let primaryLsn: bigint | undefined;
      try {
        const { rows } = await sql<{ lsn: string }>`select (pg_current_wal_lsn() - '0/0'::pg_lsn)::text as lsn`.execute(opts.primary);
        primaryLsn = BigInt(rows[0]!.lsn.split('.')[0]!);
      } catch {
        primaryLsn = undefined;
      }
      await Promise.all(states.map((_, i) => checkOne(i, primaryLsn)));
    })().finally(() => {
      checking = undefined;
    });
    return checking;
  }

  return {
    states: () => states.map((s) => ({ ...s })),
    check,
    start() {
      if (timer || states.length === 0) return;
      timer = setInterval(() => void check(), opts.checkEveryMs ?? 1_000);
      timer.unref();
    },
    stop() {
      clearInterval(timer);
      timer = undefined;
    },
    /**
     * A replica for a read that must see position `required` (undefined: any in rotation). `verify` says
     * the cached replay position is not known to be past it: the read must check inside its transaction.
     */
    pick(required: bigint | undefined): { index: number; verify: boolean } | undefined {
      const n = states.length;
      let fallback: number | undefined;
      for (let k = 0; k < n; k++) {
        const i = (next + k) % n;
        const s = states[i]!;
        if (!s.inRotation) continue;
        if (required === undefined || (s.replayLsn !== undefined && s.replayLsn >= required)) {
          next = i + 1;
          return { index: i, verify: false };
        }
        fallback ??= i;
      }
      if (fallback === undefined) return undefined;
      next = fallback + 1;
      return { index: fallback, verify: true };
    },
    markDown(i: number, err: unknown) {
      const s = states[i]!;
      s.inRotation = false;
      s.lagMs = -1;
      s.error = err instanceof Error ? err.message : String(err);
      m.inRotation.set({ replica: s.name }, 0);
      m.lag.set({ replica: s.name }, -1);
    },
    countRead(target: 'primary' | 'replica') {
      m.reads.inc({ target });
    },
    countFallback(reason: ReadFallbackReason) {
      m.fallbacks.inc({ reason });
      m.reads.inc({ target: 'primary' });
    },
  };
}

export type ReplicaRouter = ReturnType<typeof createReplicaRouter>;

/** Raised inside a replica transaction that has not replayed the principal's last write yet. */
export class ReplicaBehindError extends Error {
  override name = 'ReplicaBehindError';
}
