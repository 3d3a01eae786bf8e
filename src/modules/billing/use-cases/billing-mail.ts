import type { TenantActorContext } from '../../../platform/http/actor.ts';
import { systemActor } from '../../../platform/http/actor.ts';
import type { Mailer } from '../../notifications/index.ts';
import { addDays } from '../billing.calendar.ts';
import { BILLING_EVENTS, type LimitReachedPayload, type TrialWillEndPayload, type UsageThresholdPayload } from '../billing.events.ts';
import * as catalog from '../billing.repo.ts';
import type { Trx } from '../billing.repo.ts';
import { claimNotice } from '../notices.repo.ts';
import * as repo from '../subscriptions.repo.ts';
import type { Subscription } from '../subscriptions.repo.ts';
import { tenantCtx, type BillingContext } from './context.ts';

/**
 * Billing's e-mails, each from an outbox event and each claimed once in `billing_notices`:
 * - trial ending: `advance` (wall-clock schedule or the org's test clock) publishes `billing.trial_will_end`
 *   once per subscription, `trialReminderDays` (default 3) before the trial ends; the mail handler sends it.
 * - limit reached: a metered quota's 100 % crossing (`billing.usage_threshold_crossed`) or a numeric limit
 *   refused with 402 (`billing.limit_reached`) mails the org at most once per limit and period: the handler
 *   claims (org, limit, period) in its transaction before sending.
 * A send that fails rolls the claim back and is retried by the outbox; a send that succeeded in an
 * attempt whose commit then failed is repeated with the same Message-ID (the notice's), which the relay
 * deduplicates: the claim is what keeps a second event for the same limit and period from mailing again.
 * Mail goes to the customer's billing e-mail; an org without one gets no billing mail (logged as skipped).
 */
export const NOTICE_KINDS = { trialEnding: 'trial_ending', limitReached: 'limit_reached' } as const;

export function trialReminderAt(sub: Pick<Subscription, 'status' | 'trialEnd'>, days: number): Date | null {
  if (sub.status !== 'trialing' || !sub.trialEnd || days <= 0) return null;
  return addDays(sub.trialEnd, -days);
}

/** In `advance`'s transaction: publishes the trial-ending notice once, when the org's clock is inside the window. */
export async function remindTrialEnding(c: BillingContext, trx: Trx, ctx: TenantActorContext, sub: Subscription, now: Date): Promise<void> {
  const days = c.deps.config.trialReminderDays ?? 3;
  const at = trialReminderAt(sub, days);
  if (!at || now < at || now >= sub.trialEnd!) return;
  const noticeId = await claimNotice(trx, ctx.tenantId, NOTICE_KINDS.trialEnding, sub.id);
  if (!noticeId) return;
  const plan = await catalog.findPlan(trx, sub.planId);
  const payload: TrialWillEndPayload = {
    noticeId,
    subscriptionId: sub.id,
    planKey: plan?.key ?? null,
    planName: plan?.name ?? null,
    trialEnd: sub.trialEnd!.toISOString(),
    daysLeft: Math.max(0, Math.ceil((sub.trialEnd!.getTime() - now.getTime()) / 86_400_000)),
  };
  await c.publish(trx, ctx, BILLING_EVENTS.trialWillEnd, payload);
}

export interface BillingMail {
  /** Handler of `billing.trial_will_end`. */
  trialWillEnd(trx: Trx, tenantId: string, payload: TrialWillEndPayload): Promise<boolean>;
  /** Handler of `billing.usage_threshold_crossed` (only 100 % mails) and `billing.limit_reached`. */
  limitReached(trx: Trx, tenantId: string, input: { limit: string; periodKey: string; allowed: number; usage: number; kind: 'quota' | 'limit' }): Promise<boolean>;
  /** After a 402 LIMIT_EXCEEDED: publishes `billing.limit_reached` once per limit and period (best effort, off the error path's result). */
  noteLimitReached(orgId: string, limit: string, allowed: number, usage: number): Promise<void>;
  thresholdCrossed(trx: Trx, tenantId: string, payload: UsageThresholdPayload): Promise<boolean>;
}

export function billingMail(c: BillingContext, mailer: Pick<Mailer, 'send'> | undefined): BillingMail {
  const { scope } = c;
  // Limits already noted by this process (org, limit, period): a refused request in a loop costs no write.
  const noted = new Set<string>();

  async function send(trx: Trx, tenantId: string, noticeId: string, subject: string, lines: string[]): Promise<boolean> {
    const customer = await repo.findCustomer(trx, tenantId);
    if (!mailer || !customer?.email) return false;
    await mailer.send({ to: customer.email, subject, text: lines.join('\n'), messageId: `billing-notice-${noticeId}@plinth`, tenantId });
    return true;
  }

  async function periodKeyOf(trx: Trx, tenantId: string): Promise<string> {
    const sub = await repo.findLiveSubscription(trx, tenantId);
    if (sub) return sub.currentPeriodStart.toISOString();
    const { now } = await c.clockNow(trx, tenantId);
    return new Date(Date.UTC(now.getUTCFullYear(), now.getUTCMonth(), 1)).toISOString();
  }

  const mail: BillingMail = {
    async trialWillEnd(trx, tenantId, p) {
      const day = p.trialEnd.slice(0, 10);
      return send(trx, tenantId, p.noticeId, `Your ${p.planName ?? ''} trial ends in ${p.daysLeft} day${p.daysLeft === 1 ? '' : 's'}`.replace('  ', ' '), [
        `Your trial of the ${p.planName ?? 'current'} plan ends on ${day} (UTC).`,
        '',
        'After that the subscription becomes active and the first period is charged.',
        'To change or cancel it, open Billing in your organization settings before then.',
      ]);
    },
    async limitReached(trx, tenantId, input) {
      const noticeId = await claimNotice(trx, tenantId, NOTICE_KINDS.limitReached, `${input.limit}@${input.periodKey}`);
      if (!noticeId) return false;
      const what = input.kind === 'quota' ? `its ${input.limit} quota for this period` : `its ${input.limit} limit`;
      return send(trx, tenantId, noticeId, `Your organization reached ${what}`, [
        `Your organization has used ${input.usage} of ${input.allowed} ${input.limit} allowed by its plan.`,
        '',
        input.kind === 'quota' ? 'Depending on the plan, further use is refused or billed until the period ends.' : 'Further additions are refused until the plan is upgraded.',
        'A bigger plan or an add-on lifts it: open Billing in your organization settings.',
      ]);
    },
    async thresholdCrossed(trx, tenantId, p) {
      if (p.threshold < 100) return false;
      return mail.limitReached(trx, tenantId, { limit: p.metric, periodKey: p.periodStart, allowed: p.quota, usage: p.usage, kind: 'quota' });
    },
    async noteLimitReached(orgId, limit, allowed, usage) {
      const ctx = tenantCtx(systemActor('billing.limits'), orgId);
      let claimed: string | undefined;
      try {
        await scope.withTenant(orgId, async (trx) => {
          const periodKey = await periodKeyOf(trx, orgId);
          const key = `${orgId}\t${limit}\t${periodKey}`;
          if (noted.has(key)) return;
          // Claimed before the publish (no await in between): two refusals at once (a pool, not PGlite's one
          // connection) publish once; given back if the transaction fails.
          if (noted.size > 10_000) noted.clear();
          noted.add(key);
          claimed = key;
          const payload: LimitReachedPayload = { limit, allowed, usage, periodKey };
          await c.publish(trx, ctx, BILLING_EVENTS.limitReached, payload);
        });
      } catch (err) {
        if (claimed) noted.delete(claimed);
        throw err;
      }
    },
  };
  return mail;
}
