/**
 * Route schemas compiled on first use instead of at startup. Compiling every route's Ajv validators and
 * fast-json-stringify serializers was most of a cold start's CPU (≈1.1 s of 3.2 s in a profile of the
 * compiled API), paid before the first request could be served. Each compiler returns a stub that compiles
 * on its first call; `warmUp()` compiles the rest in the background after the listener is up (a few at a
 * time between other work), so a schema error still shows in the logs within seconds. One set per app:
 * an app closed before its warm-up keeps nothing alive.
 */
export interface LazyCompilers {
  /** A function built by `build` the first time it is called (or by warmUp, whichever comes first). */
  lazily<F extends (...args: any[]) => any>(build: () => F): { call: F; compiled: () => F };
  /** Compiles what is still pending, `batch` at a time, yielding to the event loop in between. */
  warmUp(batch?: number): Promise<number>;
}

export function createLazyCompilers(): LazyCompilers {
  const pending = new Set<() => void>();
  return {
    lazily<F extends (...args: any[]) => any>(build: () => F) {
      let fn: F | undefined;
      const compile = () => {
        pending.delete(compile);
        return (fn ??= build());
      };
      pending.add(compile);
      const call = ((...args: Parameters<F>) => (fn ?? compile())(...args)) as F;
      return { call, compiled: compile };
    },
    async warmUp(batch = 8) {
      let done = 0;
      while (pending.size > 0) {
        for (const compile of [...pending].slice(0, batch)) {
          compile();
          done++;
        }
        await new Promise((r) => setImmediate(r));
      }
      return done;
    },
  };
}
