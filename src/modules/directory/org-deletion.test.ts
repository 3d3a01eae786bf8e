import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { addMember, signup, type SignedUp } from '../../../test/helpers/auth.ts';
import { createTestPlatform, type TestPlatform } from '../../../test/helpers/test-platform.ts';
import { setTenant } from '../../platform/db/database.ts';
import { TABLE_PLACEMENT } from '../../platform/db/distribution.ts';
import { newId } from '../../platform/ids.ts';
import { PLATFORM_AUDIT_TENANT } from '../audit/index.ts';
import { ORG_DELETION_GRACE_MS } from './index.ts';

/**
 * Tenant tables this fixture does not fill (yet): their purge runs through the same generic statement
 * (every distributed table of the placement map), but no row of them is seen to go. Billing, reporting and
 * SSO state needs flows of their own (test clock, a running export, an IdP); extend fill() to shrink this.
 */
const NOT_FILLED = [
  'feature_flag_overrides',
  'billing_customers', 'billing_subscriptions', 'billing_charges', 'billing_test_clocks', 'billing_schedule',
  'billing_usage_events', 'billing_usage_rollups', 'billing_usage_uniques',
  'billing_invoices', 'billing_invoice_lines', 'billing_invoice_sequences', 'billing_invoice_orgs', 'billing_usage_cursors',
  'billing_payment_methods', 'billing_payment_attempts', 'billing_payment_index', 'billing_dunning_schedule',
  'billing_customer_discounts', 'billing_credit_notes', 'billing_customer_balances', 'billing_balance_transactions',
  'reporting_exports', 'reporting_project_weeks', 'reporting_member_days', 'reporting_task_facts',
  'sso_connections', 'sso_login_states', 'sso_replay_guard', 'org_security_policies',
  'integration_connections', 'integration_deliveries', 'integration_inbox',
];

const mode = `${process.env.TEST_DATABASE_URL ? 'postgres' : 'pglite'}${process.env.TEST_REDIS_URL ? '+redis' : ''}`;

describe(`org deletion with a grace period (${mode})`, () => {
  let t: TestPlatform;
  let doomed: SignedUp;
  let admin: SignedUp;
  let survivor: SignedUp;

  /** Rows of the tenant in every distributed table of the placement map, read as the owner in its context. */
  async function rowsOf(tenantId: string): Promise<Record<string, number>> {
    const out: Record<string, number> = {};
    await t.db.owner.transaction().execute(async (trx) => {
      await setTenant(trx, tenantId);
      for (const [table, placement] of Object.entries(TABLE_PLACEMENT)) {
        if (placement !== 'distributed') continue;
        const r = await sql<{ n: number }>`select count(*)::int as n from ${sql.table(table)} where tenant_id = ${tenantId}`.execute(trx);
        out[table] = r.rows[0]!.n;
      }
    });
    return out;
  }

  /** One object of every kind the API can create in an org. */
  async function fill(who: SignedUp) {
    const org = `/v1/orgs/${who.orgId}`;
    const post = async (url: string, payload: object, headers: Record<string, string> = who.auth) => {
      const res = await t.app.inject({ method: 'POST', url, headers, payload });
      expect(res.statusCode, `${url} ${res.body}`).toBeLessThan(300);
      return res.json();
    };
    const project = await post(`${org}/projects`, { key: 'DOOM', name: 'p' });
    const task = await post(`${org}/projects/${project.id}/tasks`, { title: 't' });
    await post(`${org}/tasks/${task.id}/comments`, { body: 'c' });
    const hook = await post(`${org}/webhooks`, { url: 'http://127.0.0.1:9/hook', events: ['projects.task_created'] });
    await t.db.withTenant(who.orgId, (trx) =>
      trx.insertInto('webhook_deliveries').values({ tenant_id: who.orgId, id: newId(), webhook_id: hook.id, event_id: newId(), event_type: 'projects.task_created', body: '{}', status: 'failed' }).execute(),
    );
    await post(`${org}/api-keys`, { name: 'k', scopes: ['org:read'] });
    await post(`${org}/invitations`, { email: `inv-${newId()}@example.com`, role: 'viewer' });
    const { token } = await post(`${org}/scim-tokens`, { name: 'idp' });
    const scim = { authorization: `Bearer ${token}`, 'content-type': 'application/json' };
    const user = await post(`/scim/v2/${who.orgId}/Users`, { userName: `scim-${newId()}@example.com` }, scim);
    await post(`/scim/v2/${who.orgId}/Groups`, { displayName: 'G', members: [{ value: user.id }] }, scim);
    await t.app.inject({ method: 'PUT', url: `${org}/scim-group-roles`, headers: who.auth, payload: { mappings: [{ group: 'G', role: 'viewer' }] } });
    await t.modules.audit.sequence(who.orgId);
  }

  beforeAll(async () => {
    t = await createTestPlatform();
    doomed = await signup(t.app, { organizationName: 'Doomed' });
    admin = await signup(t.app);
    survivor = await signup(t.app, { organizationName: 'Survivor' });
    await addMember(t.app, doomed, doomed.orgId, admin, 'admin');
    await fill(doomed);
    await fill(survivor);
  });
  afterAll(async () => t?.close());

  it('only an owner schedules it; it can be cancelled during the grace period; nothing is purged before it ends', async () => {
    expect((await t.app.inject({ method: 'DELETE', url: `/v1/orgs/${doomed.orgId}`, headers: admin.auth })).statusCode).toBe(403);
    expect((await t.app.inject({ method: 'DELETE', url: `/v1/orgs/${doomed.orgId}`, headers: survivor.auth })).statusCode).toBe(404);
    expect((await t.app.inject({ url: `/v1/orgs/${doomed.orgId}/deletion`, headers: doomed.auth })).statusCode).toBe(404);
    const res = await t.app.inject({ method: 'DELETE', url: `/v1/orgs/${doomed.orgId}`, headers: doomed.auth });
    expect(res.statusCode).toBe(202);
    const purgeAfter = new Date(res.json().purgeAfter).getTime();
    expect(Math.abs(purgeAfter - (Date.now() + ORG_DELETION_GRACE_MS))).toBeLessThan(60_000);
    expect((await t.app.inject({ url: `/v1/orgs/${doomed.orgId}/deletion`, headers: admin.auth })).json()).toMatchObject({ orgId: doomed.orgId, requestedBy: doomed.userId });

    expect(await t.modules.directory.purgeDueOrgs(new Date())).toEqual([]);
    expect((await t.app.inject({ method: 'DELETE', url: `/v1/orgs/${doomed.orgId}/deletion`, headers: doomed.auth })).statusCode).toBe(204);
    expect((await t.app.inject({ method: 'DELETE', url: `/v1/orgs/${doomed.orgId}/deletion`, headers: doomed.auth })).statusCode).toBe(404);
    expect(await t.modules.directory.purgeDueOrgs(new Date(Date.now() + 2 * ORG_DELETION_GRACE_MS))).toEqual([]);
    expect((await t.app.inject({ url: `/v1/orgs/${doomed.orgId}`, headers: doomed.auth })).statusCode).toBe(200);
  });

  it('after the grace period no row with the tenant id remains in any distributed table; other orgs keep theirs', async () => {
    expect((await t.app.inject({ method: 'DELETE', url: `/v1/orgs/${doomed.orgId}`, headers: doomed.auth })).statusCode).toBe(202);
    const before = await rowsOf(doomed.orgId);
    const survivorBefore = await rowsOf(survivor.orgId);
    // the fixture really reaches every kind of tenant table (otherwise "0 rows after" proves nothing)
    const empty = Object.entries(before).filter(([, n]) => n === 0).map(([table]) => table);
    expect(empty.filter((table) => !NOT_FILLED.includes(table))).toEqual([]);

    const purged = await t.modules.directory.purgeDueOrgs(new Date(Date.now() + ORG_DELETION_GRACE_MS + 1_000));
    expect(purged).toEqual([{ orgId: doomed.orgId, rowsDeleted: Object.values(before).reduce((a, b) => a + b, 0) }]);
    expect(Object.entries(await rowsOf(doomed.orgId)).filter(([, n]) => n > 0)).toEqual([]);
    expect(await rowsOf(survivor.orgId)).toEqual(survivorBefore);

    expect((await t.app.inject({ url: `/v1/orgs/${doomed.orgId}`, headers: doomed.auth })).statusCode).toBe(404);
    expect((await t.app.inject({ url: `/v1/orgs/${survivor.orgId}`, headers: survivor.auth })).statusCode).toBe(200);
    // purged once; the platform chain records it
    expect(await t.modules.directory.purgeDueOrgs(new Date(Date.now() + 3 * ORG_DELETION_GRACE_MS))).toEqual([]);
    await t.modules.audit.sequence();
    const [platform] = await t.modules.audit.verify(PLATFORM_AUDIT_TENANT);
    expect(platform).toMatchObject({ ok: true, problems: [] });
    const purgedEvents = await t.db.owner.transaction().execute(async (trx) => {
      await setTenant(trx, PLATFORM_AUDIT_TENANT);
      return trx.selectFrom('audit_events').select(['target_id', 'changes']).where('tenant_id', '=', PLATFORM_AUDIT_TENANT).where('action', '=', 'org.purged').execute();
    });
    expect(purgedEvents.map((e) => e.target_id)).toEqual([doomed.orgId]);
  });
});
