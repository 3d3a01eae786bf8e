import { sql, type Kysely } from 'kysely';

/** Only adds a function: the previous release runs unchanged on the migrated schema. */
export const phase = 'expand';

/**
 * Usage ingestion's write, for the events of one or several orgs in one call. Per org, in the order given:
 * sets that org's tenant context (`set_config('app.tenant_id', …, true)`, as `setTenant` does), inserts its
 * events (the primary key (tenant_id, key) is the dedupe record: a key already there is skipped), folds only
 * the rows actually inserted into the hourly rollups and the distinct-value sets, and returns the org and the
 * keys that were new. Claim, event and rollup commit together or not at all (the caller's transaction, or
 * the call's own when sent alone).
 *
 * Why a function: the statement's plan is cached per connection (a PL/pgSQL statement is planned once, not
 * on every call as the same CTE sent as text), and several orgs' events share one transaction: single events
 * arriving from many orgs at once cost one commit, not one each. SECURITY INVOKER: it runs as the caller (the
 * app role), so row-level security binds each org's writes to the org whose context was just set (WITH CHECK
 * refuses a row of any other). Puts the caller's context back at its end.
 *
 * p_groups: [{ "t": tenant, "e": [{ "k": key, "m": metric, "t": timestamptz, "v": numeric, "p": jsonb }] }]
 * p_uniques: [{ "metric", "property" }] — the unique_count meters (whose property values are kept per hour).
 */
export async function up(db: Kysely<any>): Promise<void> {
  await sql`
    create function billing_usage_ingest(p_groups json, p_uniques json) returns table (tenant_id uuid, key text)
    language plpgsql volatile security invoker as $fn$
    declare
      v_prev text := current_setting('app.tenant_id', true);
      v_group json;
      v_tenant uuid;
    begin
      for v_group in select value from json_array_elements(p_groups) loop
        v_tenant := (v_group ->> 't')::uuid;
        perform set_config('app.tenant_id', v_tenant::text, true);
        return query
        with input as (
          select i.k, i.m, i.t, i.v, i.p from json_to_recordset(v_group -> 'e') as i(k text, m text, t timestamptz, v numeric, p jsonb)
        ), ins as (
          insert into billing_usage_events as e (tenant_id, key, metric, occurred_at, value, properties)
          select v_tenant, input.k, input.m, input.t, input.v, input.p from input
          on conflict on constraint billing_usage_events_pkey do nothing
          returning e.key, e.metric, e.occurred_at, e.value, e.properties
        ), roll as (
          insert into billing_usage_rollups as r (tenant_id, metric, bucket, count, sum, max, latest_value, latest_at)
          select v_tenant, ins.metric, date_trunc('hour', ins.occurred_at, 'UTC'), count(*), sum(ins.value), max(ins.value),
                 (array_agg(ins.value order by ins.occurred_at desc))[1], max(ins.occurred_at)
          from ins group by ins.metric, date_trunc('hour', ins.occurred_at, 'UTC')
          on conflict on constraint billing_usage_rollups_pkey do update set
            count = r.count + excluded.count,
            sum = r.sum + excluded.sum,
            max = greatest(r.max, excluded.max),
            latest_value = case when excluded.latest_at >= r.latest_at then excluded.latest_value else r.latest_value end,
            latest_at = greatest(r.latest_at, excluded.latest_at)
        ), uniq as (
          insert into billing_usage_uniques (tenant_id, metric, bucket, value)
          select distinct v_tenant, ins.metric, date_trunc('hour', ins.occurred_at, 'UTC'), ins.properties ->> u.property
          from ins join json_to_recordset(p_uniques) as u(metric text, property text) on u.metric = ins.metric
          where ins.properties ? u.property
          on conflict do nothing
        )
        select v_tenant, ins.key from ins;
      end loop;
      perform set_config('app.tenant_id', coalesce(v_prev, ''), true);
    end
    $fn$`.execute(db);
}
