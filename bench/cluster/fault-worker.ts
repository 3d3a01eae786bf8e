/**
 * The fault suite's worker: exactly `plinth worker` (compose + every module's jobs + startWorker), plus the
 * probes a scenario asks for through the environment. Started by bench/cluster/suite.ts with the cluster's
 * environment; never part of the app.
 *
 *   FAULT_EVENT=fault.work_<run>         the event name the probe consumers subscribe to
 *   FAULT_CONSUMERS=fault.a_<run>,…      probe consumers this process knows (a rolling deploy: an old
 *                                        worker is started with fewer of them than a new one)
 *   FAULT_SCHEDULE=fault.tick_<run>:1000 a probe schedule (everyMs) whose every run is recorded
 *   PLINTH_CLOCK_SKEW_MS=-300            test-only: this process's clock runs that far off (below)
 *
 * Effects are rows written in the handler's / schedule's own database work: `fault_effects` (consumer,
 * event_id) in the delivery's transaction, `fault_ticks` (schedule, scheduled_at, runner, ran_at = the
 * database's now()). The suite creates both tables.
 *
 * Clock skew without libfaketime: `Date` (Date.now(), new Date()) is replaced in this process before any
 * application code loads, so every reader of the wall clock in it — the platform, BullMQ, pg's date
 * parsing — sees the skewed time, as a host whose clock is off would. Nothing in src/ knows about it.
 */
import { sql } from 'kysely';

const skewMs = Number(process.env.PLINTH_CLOCK_SKEW_MS ?? 0);
if (!Number.isFinite(skewMs) || Math.abs(skewMs) > 60_000) throw new Error('PLINTH_CLOCK_SKEW_MS must be a number of ms within ±60000');
if (skewMs !== 0) {
  const RealDate = Date;
  const realNow = RealDate.now.bind(RealDate);
  class SkewedDate extends RealDate {
    constructor(...args: unknown[]) {
      if (args.length === 0) super(realNow() + skewMs);
      else super(...(args as [string | number | Date]));
    }
    static override now(): number {
      return realNow() + skewMs;
    }
  }
  globalThis.Date = SkewedDate as DateConstructor;
}

const { compose } = await import('../../src/main.ts');
const { installSignalHandlers } = await import('../../src/platform/lifecycle.ts');
const { startWorker } = await import('../../src/worker.ts');

const { platform, modules } = await compose();
const eventName = process.env.FAULT_EVENT;
const consumers = (process.env.FAULT_CONSUMERS ?? '').split(',').filter(Boolean);
if (consumers.length > 0 && !eventName) throw new Error('FAULT_CONSUMERS needs FAULT_EVENT');
for (const consumer of consumers) {
  platform.events.subscribe(eventName!, consumer, async (event, { trx }) => {
    await sql`insert into fault_effects (consumer, event_id) values (${consumer}, ${event.id})`.execute(trx);
  }, { backoffBaseMs: 200, backoffMaxMs: 2_000 });
}
if (process.env.FAULT_SCHEDULE) {
  const [name, every] = process.env.FAULT_SCHEDULE.split(':');
  const runner = `${process.pid}${skewMs ? ` skew ${skewMs} ms` : ''}`;
  platform.events.schedule(name!, { everyMs: Number(every) }, async ({ db, scheduledAt }) => {
    await sql`insert into fault_ticks (schedule, scheduled_at, runner, ran_at) values (${name}, ${scheduledAt}, ${runner}, now())`.execute(db.app);
  });
}
await startWorker(platform, modules);
installSignalHandlers(platform.lifecycle, platform.logger);
console.log(`fault-worker ready pid=${process.pid} consumers=${consumers.join(',') || '-'} skew=${skewMs}`);
