import type { TenantActorContext } from '../../../platform/http/actor.ts';
import { newId } from '../../../platform/ids.ts';
import { noTestClock, testClockBackwards, testClockDisabled } from '../billing.errors.ts';
import * as repo from '../subscriptions.repo.ts';
import type { Subscription } from '../subscriptions.repo.ts';
import type { Trx } from '../billing.repo.ts';
import type { BillingContext } from './context.ts';

export interface TestClock {
  frozenTime: Date;
}

export interface TestClockUseCases {
  getTestClock(orgId: string): Promise<TestClock>;
  /**
   * Creates the org's clock at `frozenTime` (not before the wall clock) or moves it forward, then applies
   * every transition due by the new time (trial end, renewals, dunning), as the schedule would.
   */
  advanceTestClock(ctx: TenantActorContext, frozenTime: Date): Promise<{ clock: TestClock; subscription: Subscription | null }>;
  /** Back to the wall clock. */
  deleteTestClock(ctx: TenantActorContext): Promise<void>;
}

export function testClockUseCases(c: BillingContext, advance: (ctx: TenantActorContext, first: (trx: Trx) => Promise<void>) => Promise<Subscription | null>): TestClockUseCases {
  const { scope } = c;
  const guard = () => {
    if (c.deps.config.production) throw testClockDisabled();
  };
  return {
    async getTestClock(orgId) {
      guard();
      const clock = await scope.withTenant(orgId, (trx) => repo.findTestClock(trx, orgId));
      if (!clock) throw noTestClock();
      return { frozenTime: clock.frozenTime };
    },
    async advanceTestClock(ctx, frozenTime) {
      guard();
      let clock: TestClock | undefined;
      // The clock moves in the transaction that applies what it makes due (under the customer lock): a crash
      // cannot leave a moved clock whose renewals never ran (the wall-clock schedule skips orgs on a clock).
      const subscription = await advance(ctx, async (trx) => {
        const current = await repo.findTestClock(trx, ctx.tenantId);
        const floor = current?.frozenTime ?? new Date();
        if (frozenTime.getTime() < floor.getTime()) throw testClockBackwards();
        const set = await repo.setTestClock(trx, ctx.tenantId, current?.id ?? newId(), frozenTime);
        await c.record(trx, ctx, current ? 'billing.test_clock.advance' : 'billing.test_clock.create', { type: 'billing_test_clock', id: set.id }, { frozenTime: { from: current?.frozenTime.toISOString() ?? null, to: frozenTime.toISOString() } });
        clock = { frozenTime: set.frozenTime };
      });
      return { clock: clock!, subscription };
    },
    async deleteTestClock(ctx) {
      guard();
      await scope.withTenant(ctx.tenantId, async (trx) => {
        await repo.lockCustomer(trx, ctx.tenantId);
        const clock = await repo.findTestClock(trx, ctx.tenantId);
        if (!clock || !(await repo.deleteTestClock(trx, ctx.tenantId))) throw noTestClock();
        await c.record(trx, ctx, 'billing.test_clock.delete', { type: 'billing_test_clock', id: clock.id }, {});
        const sub = await repo.findLiveSubscription(trx, ctx.tenantId);
        await repo.setSchedule(trx, ctx.tenantId, sub ? sub.currentPeriodEnd : null, false);
      });
    },
  };
}
