import type { CacheProvider } from '../../../platform/cache/cache.ts';
import type { Database, DbScope } from '../../../platform/db/database.ts';
import type { ActorContext, TenantActorContext } from '../../../platform/http/actor.ts';
import type { EventPublisher } from '../../../platform/outbox/publisher.ts';
import type { Audit } from '../../audit/index.ts';
import type { Mailer } from '../../notifications/index.ts';
import type { PaymentsConfig } from '../../../platform/config.ts';
import type { ObjectStorage } from '../../../platform/storage/index.ts';
import type { PaymentGateway } from '../billing.gateway.ts';
import { BILLING_EVENTS, type EntitlementsChangedPayload } from '../billing.events.ts';
import { billingScope, type BillingTables, type Trx } from '../billing.repo.ts';
import { bumpEntitlements, findTestClock } from '../subscriptions.repo.ts';

export interface BillingConfig {
  /** Test clocks are refused in production. */
  production: boolean;
  /** A past_due subscription is canceled this many days after it became past due. */
  pastDueGraceDays: number;
  /** Usage events older than this (by their timestamp) are rejected. */
  usageLateWindowMs: number;
  /** A hard quota's cached period usage is re-read from the rollups at most this often (default 5 s). */
  quotaRefreshMs?: number;
  /** The API-request meter writes its counts this often (default 10 s): the most a crash loses. 0: only on demand and at close. */
  apiMeterFlushMs?: number;
  /** The trial-ending e-mail goes this many days before the trial ends (default 3; 0: none). */
  trialReminderDays?: number;
  /** The invoice run's pace, invoiced periods per second per worker (INVOICE_RUN_MAX_PER_SEC); 0 or absent: unpaced. */
  invoiceRunMaxPerSec?: number;
}

export const DEFAULT_BILLING_CONFIG: BillingConfig = { production: false, pastDueGraceDays: 14, usageLateWindowMs: 72 * 3_600_000 };

export interface BillingDeps {
  db: Database;
  audit: Audit;
  events: EventPublisher;
  /** platform.cache: the per-org entitlement snapshot (namespace `billing-entitlements`). */
  cache: Pick<CacheProvider, 'namespace'>;
  /** Tenancy's member count: seat-based prices follow it. */
  seats: (orgId: string) => Promise<number>;
  config: BillingConfig;
  // ---- invoices and payments (issue #14); optional so a composition without them still builds (tests)
  /**
   * The payment gateway, guarded: `guardedGateway(gateway, platform.policies.payment)` (timeout, retry with the
   * same idempotency key, breaker, bulkhead per gateway); default: an in-memory sandbox.
   */
  gateway?: PaymentGateway;
  /** Invoice PDFs (platform storage, as exports). */
  storage?: ObjectStorage;
  /** Where billing's e-mails go (trial ending, limit reached, dunning: the notifications module's mailer); none: no billing e-mail. */
  mailer?: Mailer;
  /** Gateway choice and dunning schedule (config.payments). */
  payments?: PaymentsConfig;
}

/** What the use cases share: the scope, the ports, the org's clock, and how a change is recorded. */
export interface BillingContext {
  scope: DbScope<BillingTables>;
  deps: BillingDeps;
  /** The org's now: its test clock when it has one, else the wall clock. */
  clockNow(trx: Trx, tenantId: string): Promise<{ now: Date; onTestClock: boolean }>;
  /** `clockNow` for a write that has no transaction to read it in: no query at all in production. */
  clockNowAlone(tenantId: string): Promise<Date>;
  record(trx: Trx, ctx: TenantActorContext, action: string, target: { type: string; id: string }, changes?: Record<string, unknown>): Promise<void>;
  publish(trx: Trx, ctx: TenantActorContext, name: string, payload: object): Promise<void>;
  /** Bumps the org's entitlements version and publishes `billing.entitlements_changed` (same transaction). */
  entitlementsChanged(trx: Trx, ctx: TenantActorContext): Promise<number>;
}

export function tenantCtx(ctx: ActorContext, tenantId: string): TenantActorContext {
  return { ...ctx, tenantId };
}

export function createBillingContext(deps: BillingDeps): BillingContext {
  const scope = billingScope(deps.db);
  const publish: BillingContext['publish'] = async (trx, ctx, name, payload) => {
    await deps.events.add(trx, { name, tenantId: ctx.tenantId, payload, requestId: ctx.requestId ?? undefined });
  };
  const clockNow: BillingContext['clockNow'] = async (trx, tenantId) => {
    if (!deps.config.production) {
      const clock = await findTestClock(trx, tenantId);
      if (clock) return { now: clock.frozenTime, onTestClock: true };
    }
    return { now: new Date(), onTestClock: false };
  };
  return {
    scope,
    deps,
    clockNow,
    async clockNowAlone(tenantId) {
      if (deps.config.production) return new Date();
      return (await scope.withTenant(tenantId, (trx) => clockNow(trx, tenantId))).now;
    },
    async record(trx, ctx, action, target, changes = {}) {
      await deps.audit.record(trx, { orgId: ctx.tenantId, action, target, changes, context: { actor: ctx.actor, requestId: ctx.requestId, ip: ctx.ip } });
    },
    publish,
    async entitlementsChanged(trx, ctx) {
      const version = await bumpEntitlements(trx, ctx.tenantId);
      const payload: EntitlementsChangedPayload = { version };
      await publish(trx, ctx, BILLING_EVENTS.entitlementsChanged, payload);
      return version;
    },
  };
}
