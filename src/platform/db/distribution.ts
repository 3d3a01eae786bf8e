/**
 * How every table would be placed if one Postgres primary is no longer enough and the tenant tables are
 * spread over a Citus cluster, keyed by `tenant_id` (docs/production.md, "Sharding with Citus").
 *
 * - `distributed`: tenant data. Sharded by `tenant_id` and co-located, so a tenant's rows (and every join,
 *   foreign key and unique check between them) live on one node. The rules Citus imposes are checked
 *   against the real schema by distribution.test.ts: `tenant_id` is NOT NULL, every primary key and
 *   unique constraint includes it, and every foreign key to another distributed table goes through it.
 * - `reference`: small global tables copied to every node, so distributed tables may reference them.
 * - `local`: platform machinery (migrations, outbox, job queues, logins before a tenant is known) kept on
 *   the coordinator; they are keyed globally on purpose (an event id, a job id, a login).
 *
 * A table missing from this map fails the test: a new table's placement is a decision, not an accident.
 */
export type Placement = 'distributed' | 'reference' | 'local';

export const TABLE_PLACEMENT: Record<string, Placement> = {
  // tenancy, identity
  organizations: 'distributed',
  memberships: 'distributed',
  invitations: 'distributed',
  api_keys: 'distributed',
  users: 'local',
  sessions: 'local',
  login_attempts: 'local',
  // audit
  audit_chains: 'distributed',
  audit_events: 'distributed',
  audit_personal_data: 'distributed',
  // projects
  projects: 'distributed',
  tasks: 'distributed',
  task_comments: 'distributed',
  // notifications
  webhook_endpoints: 'distributed',
  webhook_deliveries: 'distributed',
  // billing: the catalog is global and small (reference); everything an org owns is distributed
  billing_products: 'reference',
  billing_plans: 'reference',
  billing_prices: 'reference',
  billing_meters: 'reference',
  billing_customers: 'distributed',
  billing_subscriptions: 'distributed',
  billing_charges: 'distributed',
  billing_test_clocks: 'distributed',
  billing_schedule: 'distributed',
  billing_usage_events: 'distributed',
  billing_usage_rollups: 'distributed',
  billing_usage_uniques: 'distributed',
  // The payment-webhook inbox is keyed globally by the gateway's event id (the org is read from the signed
  // payload, and some events name none): platform machinery beside the outbox.
  billing_payment_events: 'local',
  billing_addons: 'reference',
  billing_subscription_addons: 'distributed',
  billing_notices: 'distributed',
  // billing II (invoices, payments): coupons, promotion codes and tax rates are admin catalog (reference)
  billing_invoices: 'distributed',
  billing_invoice_lines: 'distributed',
  billing_invoice_sequences: 'distributed',
  billing_invoice_orgs: 'distributed',
  billing_usage_cursors: 'distributed',
  billing_payment_methods: 'distributed',
  billing_payment_attempts: 'distributed',
  billing_payment_index: 'distributed',
  billing_dunning_schedule: 'distributed',
  billing_invoice_queue: 'distributed',
  billing_customer_discounts: 'distributed',
  billing_credit_notes: 'distributed',
  billing_customer_balances: 'distributed',
  billing_balance_transactions: 'distributed',
  billing_coupons: 'reference',
  billing_promotion_codes: 'reference',
  billing_tax_rates: 'reference',
  // reporting: exports and read models belong to the org; the job queue is platform machinery
  reporting_exports: 'distributed',
  reporting_project_weeks: 'distributed',
  reporting_member_days: 'distributed',
  reporting_task_facts: 'distributed',
  reporting_export_jobs: 'local',
  // sso and MFA: an org's connections, domains and policy are distributed; what login needs before it knows
  // the org (a domain's enforcement, a user's second factor) is keyed globally, beside users
  sso_connections: 'distributed',
  sso_login_states: 'distributed',
  sso_replay_guard: 'distributed',
  // A domain is verified by one org only (a unique index across tenants): kept on the coordinator.
  org_domains: 'local',
  org_security_policies: 'distributed',
  sso_enforced_domains: 'local',
  user_mfa: 'local',
  user_recovery_codes: 'local',
  mfa_challenges: 'local',
  webauthn_credentials: 'local',
  webauthn_challenges: 'local',
  // directory (SCIM)
  scim_tokens: 'distributed',
  scim_users: 'distributed',
  scim_groups: 'distributed',
  scim_group_members: 'distributed',
  scim_group_roles: 'distributed',
  // a tombstone per deleted org, kept after the purge (no tenant data)
  org_deletions: 'local',
  // integrations
  integration_connections: 'distributed',
  integration_deliveries: 'distributed',
  integration_inbox: 'distributed',
  // platform
  feature_flags: 'reference',
  feature_flag_overrides: 'distributed',
  feature_flag_changes: 'local',
  feature_flag_exposures: 'local',
  plinth_migrations: 'local',
  api_deprecated_usage: 'local',
  tenant_costs: 'local',
  outbox: 'local',
  job_deliveries: 'local',
  job_consumers: 'local',
  job_schedules: 'local',
  processed_events: 'local',
  idempotency_keys: 'local',
};

/** A foreign key between two tables, as the catalog lists it. */
export interface ForeignKey {
  table: string;
  references: string;
}

/**
 * The statements that place the tables on a Citus cluster: reference tables first, then the co-location
 * anchor (organizations), then every other distributed table co-located with it, each after the tables
 * it references (Citus refuses a foreign key to a table that is not distributed yet).
 * `plinth db citus-plan` prints them for the connected database; run them once on the coordinator,
 * after the migrations.
 */
export function citusDistributionSql(foreignKeys: ForeignKey[], placement: Record<string, Placement> = TABLE_PLACEMENT): string[] {
  const names = (p: Placement) => Object.keys(placement).filter((t) => placement[t] === p).sort();
  const ordered: string[] = [];
  const visit = (table: string, path: string[]) => {
    if (ordered.includes(table) || placement[table] !== 'distributed') return;
    if (path.includes(table)) throw new Error(`foreign-key cycle: ${[...path, table].join(' -> ')}`);
    for (const fk of foreignKeys.filter((f) => f.table === table && f.references !== table)) visit(fk.references, [...path, table]);
    ordered.push(table);
  };
  visit('organizations', []);
  for (const t of names('distributed')) visit(t, []);
  return [
    ...names('reference').map((t) => `select create_reference_table('${t}');`),
    ...ordered.map((t) =>
      t === 'organizations'
        ? `select create_distributed_table('organizations', 'tenant_id');`
        : `select create_distributed_table('${t}', 'tenant_id', colocate_with => 'organizations');`,
    ),
  ];
}
