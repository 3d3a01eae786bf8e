import { sql, type Kysely } from 'kysely';

/** Only adds a function: the previous release runs unchanged on the migrated schema. */
export const phase = 'expand';

/**
 * The audit sequencer's write for many chains in one call (one round trip instead of ~5 per chain; a period
 * end's invoice run leaves pending events in 10,000 chains at once). Per chain, in the order given: sets that
 * chain's tenant context (`set_config('app.tenant_id', …, true)`, as `setTenant` does), links its pending events
 * (seq, prev_hash, hash, computed by the caller from the head it locked) and moves the head. SECURITY INVOKER:
 * it runs as the caller (the owner role, the sequencer's), so row-level security binds each UPDATE to the chain
 * whose context was just set, exactly as the statements sent one by one. An event already linked or invisible
 * (another chain's id) is not updated, and the whole call fails: the caller's transaction rolls back and its
 * heads stay where they were. Puts the caller's context back at its end.
 *
 * p_chains: [{ "t": tenant, "last_seq": n, "last_hash": h, "rows": [{ "id", "seq", "prev_hash", "hash" }] }]
 */
export async function up(db: Kysely<any>): Promise<void> {
  await sql`
    create function audit_sequencer_link(p_chains jsonb) returns void
    language plpgsql volatile security invoker as $fn$
    declare
      prev text := current_setting('app.tenant_id', true);
      c jsonb;
      t uuid;
      n integer;
    begin
      for c in select value from jsonb_array_elements(p_chains) loop
        t := (c ->> 't')::uuid;
        perform set_config('app.tenant_id', t::text, true);
        update audit_events as e set seq = v.seq, prev_hash = v.prev_hash, hash = v.hash
          from jsonb_to_recordset(c -> 'rows') as v(id uuid, seq bigint, prev_hash text, hash text)
          where e.tenant_id = t and e.id = v.id and e.seq is null;
        get diagnostics n = row_count;
        if n <> jsonb_array_length(c -> 'rows') then
          raise exception 'audit sequencer: chain % changed under its lock', t;
        end if;
        update audit_chains set last_seq = (c ->> 'last_seq')::bigint, last_hash = c ->> 'last_hash', updated_at = now()
          where tenant_id = t;
      end loop;
      perform set_config('app.tenant_id', coalesce(prev, ''), true);
    end
    $fn$`.execute(db);
}

