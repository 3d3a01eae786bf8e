import { sql, type Kysely } from 'kysely';

/** Only adds functions: the previous release runs unchanged on the migrated schema. */
export const phase = 'expand';

/**
 * The batched invoice run's three steps as functions (issue #14, I1): each takes the whole batch (many orgs)
 * in one call — one round trip per step instead of ~7 per org — and, org by org, sets that org's tenant context
 * (`set_config('app.tenant_id', org, true)`, exactly what the app's `setTenant` does) before the org's
 * statements. They are SECURITY INVOKER (the default): they run as the caller, the app role, so row-level
 * security binds every statement to the org whose context was just set, USING and WITH CHECK, as it would
 * bind the same statements sent one by one. Nothing here bypasses RLS: a row of another org than the item's
 * is invisible to the reads and refused by the writes. Each clears the context at its end.
 *
 * - `billing_invoice_run_load(orgs)`: per org (in the given order: the caller sorts, so batches lock in one
 *   order), the customer row locked FOR UPDATE and everything the invoice needs, as one jsonb.
 * - `billing_invoice_run_usage(windows)`: per usage window, the aggregate, event count and hash, computed
 *   exactly as `aggregateUsage` (invoices.repo.ts) computes them for the count/sum/max/unique_count/latest
 *   aggregations (time-weighted sums stay on that path).
 * - `billing_invoice_run_write(items)`: per org, the next gap-free number, the finalized invoice, its lines,
 *   the charges it claims (fails the whole call when one was claimed meanwhile), the usage cursor, the audit
 *   records and the outbox events (the invoice number, assigned here, is set into the records' `changes` and
 *   the events' payloads where they carry a `number` key), then one NOTIFY for the outbox.
 */
export async function up(db: Kysely<any>): Promise<void> {
  await sql`
    create function billing_invoice_run_load(p_orgs uuid[]) returns table (org uuid, state jsonb)
    language plpgsql volatile security invoker as $fn$
    declare
      t uuid;
    begin
      foreach t in array p_orgs loop
        perform set_config('app.tenant_id', t::text, true);
        return query
          select c.tenant_id, jsonb_build_object(
            'customer', to_jsonb(c),
            'sub', s.sub,
            'charges', (select coalesce(jsonb_agg(to_jsonb(ch) order by ch.id), '[]'::jsonb)
               from (select * from billing_charges bc where bc.tenant_id = c.tenant_id and bc.invoice_id is null order by bc.id limit 1000) ch),
            'cursors', (select jsonb_agg(to_jsonb(u)) from billing_usage_cursors u
               where u.tenant_id = c.tenant_id and u.subscription_id = (s.sub ->> 'id')::uuid),
            'discount', (select to_jsonb(d) from billing_customer_discounts d where d.tenant_id = c.tenant_id and d.active limit 1),
            'has_balance', exists (select 1 from billing_customer_balances b where b.tenant_id = c.tenant_id),
            'has_clock', exists (select 1 from billing_test_clocks k where k.tenant_id = c.tenant_id))
          from billing_customers c
          left join lateral (
            select to_jsonb(x) as sub from billing_subscriptions x where x.tenant_id = c.tenant_id
            order by x.status = 'canceled', x.id desc limit 1) s on true
          where c.tenant_id = t
          for update of c;
      end loop;
      perform set_config('app.tenant_id', '', true);
    end
    $fn$`.execute(db);

  await sql`
    create function billing_invoice_run_usage(p_windows jsonb) returns table (org uuid, value text, events bigint, hash text)
    language plpgsql volatile security invoker as $fn$
    declare
      w record;
    begin
      for w in
        select * from jsonb_to_recordset(p_windows) as x(org uuid, metric text, aggregation text, property text,
          lower_bound timestamptz, "from" timestamptz, "to" timestamptz, cutoff timestamptz, previous_cutoff timestamptz)
      loop
        perform set_config('app.tenant_id', w.org::text, true);
        return query
          select w.org,
            (case w.aggregation
              when 'count' then count(*)::numeric
              when 'sum' then coalesce(sum(e.value), 0)
              when 'max' then coalesce(max(e.value), 0)
              when 'unique_count' then count(distinct e.properties ->> w.property)::numeric
              else coalesce((array_agg(e.value order by e.occurred_at desc, e.key desc))[1], 0)
            end)::text,
            count(*),
            encode(sha256(convert_to(coalesce(string_agg(
              e.key || '|' || (extract(epoch from e.occurred_at) * 1000)::bigint || '|' || e.value::text || '|' || coalesce(e.properties ->> w.property, ''),
              E'\n' order by e.key), ''), 'UTF8')), 'hex')
          from billing_usage_events e
          where e.tenant_id = w.org and e.metric = w.metric
            and e.occurred_at >= w.lower_bound and e.occurred_at < w."to" and e.received_at <= w.cutoff
            and (e.occurred_at >= w."from" or (w.previous_cutoff is not null and e.occurred_at < w."from" and e.received_at > w.previous_cutoff));
      end loop;
      perform set_config('app.tenant_id', '', true);
    end
    $fn$`.execute(db);

  await sql`
    create function billing_invoice_run_write(p_items jsonb) returns table (org uuid, invoice_id uuid, seq bigint, number text, created_at timestamptz)
    language plpgsql volatile security invoker as $fn$
    #variable_conflict use_column
    declare
      it jsonb;
      t uuid;
      inv jsonb;
      v_seq bigint;
      v_number text;
      v_created timestamptz;
      v_claimed bigint;
      v_events bigint := 0;
    begin
      for it in select value from jsonb_array_elements(p_items) loop
        t := (it ->> 'org')::uuid;
        perform set_config('app.tenant_id', t::text, true);
        inv := it -> 'invoice';
        if it -> 'cursor' is not null and jsonb_typeof(it -> 'cursor') = 'object' then
          insert into billing_usage_cursors (tenant_id, subscription_id, metric, billed_to, cutoff)
          values (t, (it -> 'cursor' ->> 'subscription_id')::uuid, it -> 'cursor' ->> 'metric',
            (it -> 'cursor' ->> 'billed_to')::timestamptz, (it -> 'cursor' ->> 'cutoff')::timestamptz)
          on conflict (tenant_id, subscription_id, metric) do update set billed_to = excluded.billed_to, cutoff = excluded.cutoff;
        end if;
        continue when inv is null or jsonb_typeof(inv) <> 'object';

        insert into billing_invoice_sequences as s (tenant_id, last_seq) values (t, 1)
        on conflict (tenant_id) do update set last_seq = s.last_seq + 1
        returning s.last_seq into v_seq;
        v_number := (it ->> 'number_prefix') || '-' || lpad(v_seq::text, greatest(5, length(v_seq::text)), '0');

        insert into billing_invoices (tenant_id, id, seq, number, status, reason, subscription_id, currency, period_start, period_end,
          customer, usage_cutoff, discount, tax, subtotal, discount_total, tax_total, total, credit_applied, amount_due, finalized_at, paid_at, version)
        select t, i.id, v_seq, v_number, i.status, i.reason, i.subscription_id, i.currency, i.period_start, i.period_end,
          i.customer, i.usage_cutoff, i.discount, i.tax, i.subtotal, i.discount_total, i.tax_total, i.total, 0, i.amount_due,
          i.finalized_at, i.paid_at, 2
        from jsonb_to_record(inv) as i(id uuid, status text, reason text, subscription_id uuid, currency text, period_start timestamptz,
          period_end timestamptz, customer jsonb, usage_cutoff timestamptz, discount jsonb, tax jsonb, subtotal bigint, discount_total bigint,
          tax_total bigint, total bigint, amount_due bigint, finalized_at timestamptz, paid_at timestamptz)
        returning billing_invoices.created_at into v_created;

        insert into billing_invoice_lines (tenant_id, id, invoice_id, position, kind, description, charge_id, subscription_id, price_id,
          price_version, quantity, unit_amount, amount, discount_amount, tax_amount, period_start, period_end, computation)
        select t, x.id, (inv ->> 'id')::uuid, x.position, x.kind, x.description, x.charge_id, x.subscription_id, x.price_id,
          x.price_version, x.quantity, x.unit_amount, x.amount, x.discount_amount, x.tax_amount, x.period_start, x.period_end, x.computation
        from jsonb_to_recordset(it -> 'lines') as x(id uuid, position int, kind text, description text, charge_id uuid, subscription_id uuid,
          price_id uuid, price_version int, quantity bigint, unit_amount bigint, amount bigint, discount_amount bigint, tax_amount bigint,
          period_start timestamptz, period_end timestamptz, computation jsonb);

        update billing_charges set invoice_id = (inv ->> 'id')::uuid
        where tenant_id = t and id in (select jsonb_array_elements_text(it -> 'charge_ids')::uuid) and billing_charges.invoice_id is null;
        get diagnostics v_claimed = row_count;
        if v_claimed <> jsonb_array_length(it -> 'charge_ids') then
          raise exception 'invoice run: % charge(s) of org % were already on another invoice', jsonb_array_length(it -> 'charge_ids') - v_claimed, t;
        end if;

        insert into audit_events (tenant_id, id, occurred_at, actor_type, actor_id, actor_user_id, action, target_type, target_id, request_id, ip, changes, pd_ref)
        select a.tenant_id, a.id, a.occurred_at, a.actor_type, a.actor_id, a.actor_user_id, a.action, a.target_type, a.target_id, a.request_id, a.ip,
          case when a.changes ? 'number' then jsonb_set(a.changes, '{number}', to_jsonb(v_number)) else a.changes end, a.pd_ref
        from jsonb_to_recordset(it -> 'audit') as a(tenant_id uuid, id uuid, occurred_at timestamptz, actor_type text, actor_id text, actor_user_id uuid,
          action text, target_type text, target_id text, request_id text, ip text, changes jsonb, pd_ref uuid);

        insert into outbox (id, tenant_id, name, payload, request_id, traceparent, occurred_at)
        select o.id, o.tenant_id, o.name, case when o.payload ? 'number' then jsonb_set(o.payload, '{number}', to_jsonb(v_number)) else o.payload end,
          o.request_id, o.traceparent, o.occurred_at
        from jsonb_to_recordset(it -> 'events') as o(id uuid, tenant_id uuid, name text, payload jsonb, request_id text, traceparent text, occurred_at timestamptz);
        v_events := v_events + jsonb_array_length(it -> 'events');

        org := t;
        invoice_id := (inv ->> 'id')::uuid;
        seq := v_seq;
        number := v_number;
        created_at := v_created;
        return next;
      end loop;
      perform set_config('app.tenant_id', '', true);
      -- Delivered at commit only: a worker in another process relays at once instead of at its next poll.
      if v_events > 0 then perform pg_notify('plinth_outbox', ''); end if;
    end
    $fn$`.execute(db);

  for (const f of ['billing_invoice_run_load(uuid[])', 'billing_invoice_run_usage(jsonb)', 'billing_invoice_run_write(jsonb)']) {
    await sql`grant execute on function ${sql.raw(f)} to plinth_app`.execute(db);
  }
}
