import type { Logger } from 'pino';

/** The process's shutdown phase, read by the HTTP kernel (readiness, refusing new work). */
export interface LifecycleState {
  /** True from SIGTERM on: readiness answers 503 and new requests on kept-alive connections are refused. */
  draining: boolean;
  /** True once the listener is closing: only in-flight requests are still served. */
  closing: boolean;
}

export interface Closer {
  name: string;
  close(): Promise<void>;
}

export interface Lifecycle {
  state: LifecycleState;
  /** Closers run in reverse registration order (the listener first, pools last). */
  onShutdown(closer: Closer): void;
  /** Resolves with the exit code: 0 when everything closed within the grace period, 1 otherwise. */
  shutdown(reason: string): Promise<number>;
}

export function createLifecycle(opts: { logger: Logger; graceMs: number; delayMs: number }): Lifecycle {
  const state: LifecycleState = { draining: false, closing: false };
  const closers: Closer[] = [];
  let running: Promise<number> | undefined;

  async function closeAll(): Promise<void> {
    if (opts.delayMs > 0) await new Promise((r) => setTimeout(r, opts.delayMs));
    state.closing = true;
    for (const closer of [...closers].reverse()) {
      const started = Date.now();
      try {
        await closer.close();
        opts.logger.info({ closer: closer.name, ms: Date.now() - started }, 'closed');
      } catch (err) {
        opts.logger.error({ closer: closer.name, err }, 'close failed');
      }
    }
  }

  return {
    state,
    onShutdown(closer) {
      closers.push(closer);
    },
    shutdown(reason) {
      running ??= (async () => {
        state.draining = true;
        opts.logger.info({ reason, graceMs: opts.graceMs }, 'shutting down: readiness now 503, finishing in-flight work');
        let timer: NodeJS.Timeout | undefined;
        const timedOut = new Promise<'timeout'>((resolve) => {
          timer = setTimeout(() => resolve('timeout'), opts.graceMs + opts.delayMs);
        });
        const outcome = await Promise.race([closeAll().then(() => 'done' as const), timedOut]);
        clearTimeout(timer);
        if (outcome === 'timeout') {
          opts.logger.error({ graceMs: opts.graceMs }, 'shutdown grace period elapsed; exiting with work unfinished');
          return 1;
        }
        opts.logger.info('shutdown complete');
        return 0;
      })();
      return running;
    },
  };
}

/** SIGTERM/SIGINT start a graceful shutdown; a second signal exits at once. */
export function installSignalHandlers(lifecycle: Lifecycle, logger: Logger): void {
  let received = 0;
  const handler = (signal: NodeJS.Signals) => {
    received += 1;
    if (received > 1) {
      logger.warn({ signal }, 'second signal: exiting immediately');
      process.exit(1);
    }
    void lifecycle.shutdown(signal).then((code) => {
      // Let the final log lines flush before the process ends.
      setImmediate(() => process.exit(code));
    });
  };
  process.on('SIGTERM', handler);
  process.on('SIGINT', handler);
}
