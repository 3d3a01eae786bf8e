import { stringify } from 'csv-stringify/sync';
import type { DbScope } from '../../platform/db/database.ts';
import { movementsOf, monthKey, monthsIn, rate, segmentsOf, valueAt, type Movement } from './billing-metrics.ts';
import { orgFacts, plans as loadPlans, type BillingReportTables, type OrgBillingFacts, type PlanInfo } from './billing-reports.repo.ts';
import { neutralizeCell } from './export-format.ts';
import { invalidRange, unknownReport } from './reporting.errors.ts';

export const BILLING_REPORT_NAMES = ['mrr', 'churn', 'subscriptions', 'trial-conversion', 'usage'] as const;
export type BillingReportName = (typeof BILLING_REPORT_NAMES)[number];

type Cell = string | number | null;
export interface BillingReport {
  name: BillingReportName;
  scope: 'org' | 'platform';
  from: Date;
  to: Date;
  columns: string[];
  rows: Array<Record<string, Cell>>;
}

export interface BillingReportQuery {
  from?: string;
  to?: string;
}

const COLUMNS: Record<BillingReportName, string[]> = {
  mrr: ['month', 'currency', 'mrr_start', 'new', 'expansion', 'contraction', 'churned', 'net', 'mrr_end', 'arr_end', 'paying_subscriptions_end'],
  churn: ['month', 'currency', 'subscriptions_start', 'subscriptions_churned', 'subscription_churn_rate', 'customers_start', 'customers_churned', 'customer_churn_rate', 'mrr_start', 'mrr_churned', 'mrr_contraction', 'mrr_churn_rate', 'gross_mrr_churn_rate'],
  subscriptions: ['plan', 'plan_name', 'status', 'currency', 'subscriptions', 'customers', 'mrr', 'arr'],
  'trial-conversion': ['month', 'trials_ended', 'converted', 'not_converted', 'conversion_rate'],
  usage: ['month', 'metric', 'events', 'sum', 'max'],
};

const MAX_MONTHS = 36;

export interface BillingReportsDeps {
  scope: DbScope<BillingReportTables>;
  /** Every org id (cross-tenant reports visit each in its own tenant transaction). */
  allOrgIds(): Promise<string[]>;
}

/**
 * Billing reports: MRR and its movements, churn, subscriptions by plan, trial conversion, usage — for one
 * org (its own billing), or across every org (platform admins: the business). Computed from billing's
 * tables per request, per org in a READ ONLY transaction (a replica when in rotation).
 */
export function createBillingReports(deps: BillingReportsDeps) {
  function range(q: BillingReportQuery, now: Date): { from: Date; to: Date } {
    const to = q.to ? new Date(q.to) : new Date(Date.UTC(now.getUTCFullYear(), now.getUTCMonth() + 1, 1));
    const from = q.from ? new Date(q.from) : new Date(Date.UTC(to.getUTCFullYear(), to.getUTCMonth() - 12, 1));
    if (!(from < to)) throw invalidRange('from must be before to');
    if (monthsIn(from, to).length > MAX_MONTHS) throw invalidRange(`at most ${MAX_MONTHS} months`);
    return { from, to };
  }

  async function facts(orgIds: string[], from: Date, to: Date): Promise<OrgBillingFacts[]> {
    const out: OrgBillingFacts[] = [];
    for (const id of orgIds) {
      out.push(await deps.scope.withTenantRead(id, (trx) => orgFacts(trx, id, from, to), { readOnly: true, statementTimeoutMs: 10_000 }));
    }
    return out;
  }

  function compute(name: BillingReportName, all: OrgBillingFacts[], planInfo: Map<string, PlanInfo>, from: Date, to: Date): Array<Record<string, Cell>> {
    const subs = all.flatMap((f) => f.subscriptions.map((s) => ({ s, segments: segmentsOf(s, f.charges) })));
    const months = monthsIn(from, to);
    // A month's end is capped at its org's now: the current month shows where it stands today.
    const endOf = (m: Date) => new Date(Date.UTC(m.getUTCFullYear(), m.getUTCMonth() + 1, 1));
    switch (name) {
      case 'mrr':
      case 'churn': {
        const movements: Movement[] = subs.flatMap(({ s, segments }) => movementsOf(s, segments));
        const currencies = [...new Set(subs.map(({ s }) => s.currency))].sort();
        const rows: Array<Record<string, Cell>> = [];
        for (const m of months) {
          const start = m.getTime();
          const end = endOf(m).getTime();
          for (const currency of currencies) {
            const inCur = subs.filter(({ s }) => s.currency === currency);
            const at = (t: number) => inCur.map(({ s, segments }) => ({ s, v: valueAt(segments, Math.min(t, s.now.getTime())) }));
            const startVals = at(start - 1);
            const endVals = at(end - 1);
            const mv = movements.filter((x) => x.currency === currency && x.at.getTime() >= start && x.at.getTime() < end);
            const total = (kind: Movement['kind']) => mv.filter((x) => x.kind === kind).reduce((a, x) => a + x.amount, 0);
            const mrrStart = startVals.reduce((a, x) => a + x.v.mrr, 0);
            const mrrEnd = endVals.reduce((a, x) => a + x.v.mrr, 0);
            if (name === 'mrr') {
              const [n, e, c, ch] = [total('new'), total('expansion'), total('contraction'), total('churned')];
              rows.push({
                month: monthKey(m),
                currency,
                mrr_start: mrrStart,
                new: n,
                expansion: e,
                contraction: c,
                churned: ch,
                net: n + e - c - ch,
                mrr_end: mrrEnd,
                arr_end: endVals.reduce((a, x) => a + x.v.arr, 0),
                paying_subscriptions_end: endVals.filter((x) => x.v.mrr > 0).length,
              });
            } else {
              const payingAtStart = new Set(startVals.filter((x) => x.v.mrr > 0).map((x) => x.s.id));
              const churnedSubs = new Set(mv.filter((x) => x.kind === 'churned' && payingAtStart.has(x.subscriptionId)).map((x) => x.subscriptionId));
              const tenantsAt = (vals: typeof startVals) => new Set(vals.filter((x) => x.v.mrr > 0).map((x) => x.s.tenantId));
              const customersStart = tenantsAt(startVals);
              const customersEnd = tenantsAt(endVals);
              const customersChurned = [...customersStart].filter((t) => !customersEnd.has(t)).length;
              const churned = mv.filter((x) => x.kind === 'churned').reduce((a, x) => a + x.amount, 0);
              const contraction = total('contraction');
              rows.push({
                month: monthKey(m),
                currency,
                subscriptions_start: payingAtStart.size,
                subscriptions_churned: churnedSubs.size,
                subscription_churn_rate: rate(churnedSubs.size, payingAtStart.size),
                customers_start: customersStart.size,
                customers_churned: customersChurned,
                customer_churn_rate: rate(customersChurned, customersStart.size),
                mrr_start: mrrStart,
                mrr_churned: churned,
                mrr_contraction: contraction,
                mrr_churn_rate: rate(churned, mrrStart),
                gross_mrr_churn_rate: rate(churned + contraction, mrrStart),
              });
            }
          }
        }
        return rows;
      }
      case 'subscriptions': {
        const groups = new Map<string, { plan: string; plan_name: string; status: string; currency: string; subs: number; tenants: Set<string>; mrr: number; arr: number }>();
        for (const { s, segments } of subs) {
          if (s.status === 'canceled') continue;
          const plan = planInfo.get(s.planId);
          const k = `${s.planId}|${s.status}|${s.currency}`;
          const g = groups.get(k) ?? { plan: plan?.key ?? s.planId, plan_name: plan?.name ?? '', status: s.status, currency: s.currency, subs: 0, tenants: new Set<string>(), mrr: 0, arr: 0 };
          const v = valueAt(segments, s.now.getTime());
          g.subs++;
          g.tenants.add(s.tenantId);
          g.mrr += v.mrr;
          g.arr += v.arr;
          groups.set(k, g);
        }
        return [...groups.values()]
          .sort((a, b) => a.plan.localeCompare(b.plan) || a.status.localeCompare(b.status) || a.currency.localeCompare(b.currency))
          .map((g) => ({ plan: g.plan, plan_name: g.plan_name, status: g.status, currency: g.currency, subscriptions: g.subs, customers: g.tenants.size, mrr: g.mrr, arr: g.arr }));
      }
      case 'trial-conversion': {
        return months.map((m) => {
          const start = m.getTime();
          const end = endOf(m).getTime();
          const ended = subs.filter(({ s }) => s.trialEnd && s.trialEnd.getTime() >= start && s.trialEnd.getTime() < end && s.trialEnd <= s.now);
          // Converted: revenue started when the trial ended (a trial canceled before its end never has any).
          const converted = ended.filter(({ s, segments }) => segments.some((x) => x.start >= s.trialEnd!.getTime() && x.mrr > 0)).length;
          return { month: monthKey(m), trials_ended: ended.length, converted, not_converted: ended.length - converted, conversion_rate: rate(converted, ended.length) };
        });
      }
      case 'usage': {
        // Sums of usage values (numeric, possibly fractional) stay exact: added as decimal strings.
        const byKey = new Map<string, { month: string; metric: string; events: number; sum: string; max: number }>();
        for (const u of all.flatMap((f) => f.usage)) {
          const k = `${u.month}|${u.metric}`;
          const g = byKey.get(k) ?? { month: u.month, metric: u.metric, events: 0, sum: '0', max: -Infinity };
          g.events += u.events;
          g.sum = addDecimal(g.sum, u.sum);
          g.max = Math.max(g.max, Number(u.max));
          byKey.set(k, g);
        }
        return [...byKey.entries()].sort(([a], [b]) => a.localeCompare(b)).map(([, g]) => ({ month: g.month, metric: g.metric, events: g.events, sum: g.sum, max: String(g.max) }));
      }
    }
  }

  async function run(name: string, q: BillingReportQuery, orgIds: string[], scope: 'org' | 'platform', now: Date): Promise<BillingReport> {
    if (!(BILLING_REPORT_NAMES as readonly string[]).includes(name)) throw unknownReport(name);
    const n = name as BillingReportName;
    const { from, to } = range(q, now);
    const all = await facts(orgIds, from, to);
    const planInfo = await loadPlans(deps.scope.app); // the catalog: global, small
    return { name: n, scope, from, to, columns: COLUMNS[n], rows: compute(n, all, planInfo, from, to) };
  }

  return {
    /** An org's own billing. Its "now" is its test clock when it has one. */
    async forOrg(orgId: string, name: string, q: BillingReportQuery): Promise<BillingReport> {
      const clockNow = await deps.scope.withTenantRead(orgId, async (trx) => (await trx.selectFrom('billing_test_clocks').select('frozen_time').where('tenant_id', '=', orgId).executeTakeFirst())?.frozen_time, { readOnly: true });
      return run(name, q, [orgId], 'org', clockNow ? new Date(clockNow) : new Date());
    },
    /** The business across every org (platform admins). */
    async forPlatform(name: string, q: BillingReportQuery): Promise<BillingReport> {
      return run(name, q, await deps.allOrgIds(), 'platform', new Date());
    },
  };
}

/** Adds two non-negative decimal strings exactly. */
function addDecimal(a: string, b: string): string {
  const [ai, af = ''] = a.split('.');
  const [bi, bf = ''] = b.split('.');
  const places = Math.max(af.length, bf.length);
  const scale = 10n ** BigInt(places);
  const total = BigInt(ai!) * scale + BigInt(af.padEnd(places, '0') || '0') + BigInt(bi!) * scale + BigInt(bf.padEnd(places, '0') || '0');
  if (places === 0) return total.toString();
  const s = total.toString().padStart(places + 1, '0');
  const frac = s.slice(-places).replace(/0+$/, '');
  return frac ? `${s.slice(0, -places)}.${frac}` : s.slice(0, -places);
}

/** The report as CSV (the same cells, spreadsheet-safe). */
export function billingReportCsv(r: BillingReport): string {
  return stringify(r.rows, { header: true, columns: r.columns, cast: { string: neutralizeCell } });
}

export type BillingReports = ReturnType<typeof createBillingReports>;
