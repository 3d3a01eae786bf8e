import { sql, type Kysely } from 'kysely';

/** Only adds a function: the previous release runs unchanged on the migrated schema. */
export const phase = 'expand';

/**
 * Which of many orgs have an active webhook endpoint subscribed to an event type, in one call (the audit
 * sequencer asks it for every chain of a pass: thousands after a period end's invoice run). Per org it sets
 * that org's tenant context (`set_config('app.tenant_id', …, true)`, as `setTenant` does) before its lookup.
 * SECURITY INVOKER: it runs as the caller (the app role), so row-level security binds each lookup to the org
 * whose context was just set. Puts the caller's context back at its end.
 */
export async function up(db: Kysely<any>): Promise<void> {
  await sql`
    create function webhook_orgs_subscribed(p_orgs uuid[], p_event text) returns setof uuid
    language plpgsql volatile security invoker as $fn$
    declare
      prev text := current_setting('app.tenant_id', true);
      t uuid;
    begin
      foreach t in array p_orgs loop
        perform set_config('app.tenant_id', t::text, true);
        if exists (select 1 from webhook_endpoints e where e.tenant_id = t and e.active and e.events @> array[p_event]) then
          return next t;
        end if;
      end loop;
      perform set_config('app.tenant_id', coalesce(prev, ''), true);
    end
    $fn$`.execute(db);
}
