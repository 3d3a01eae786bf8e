import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createEdgeTestApp, createWidgetTable, type WidgetControls } from '../../../test/helpers/edge-fixtures.ts';
import { createTestPlatform, type TestPlatform } from '../../../test/helpers/test-platform.ts';
import { newId } from '../ids.ts';
import type { App } from './server.ts';

const auth = { authorization: 'Bearer alice' };
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * The stored response is written in the same transaction as the effects it guards (a unit of work per
 * idempotent request): both commit or neither, and a claim taken over by a retry fences off the original.
 */
describe(`Idempotency-Key: outcome and effect commit together (${process.env.TEST_DATABASE_URL ? 'postgres' : 'pglite'})`, () => {
  let t: TestPlatform;
  let app: App;
  const controls: WidgetControls = { failNext: 0, handlerCalls: 0 };

  const post = (orgId: string, path: string, key: string | undefined, name = 'w') =>
    app.inject({ method: 'POST', url: `/v1/orgs/${orgId}/${path}`, headers: { ...auth, ...(key ? { 'idempotency-key': key } : {}) }, payload: { name } });
  async function widgets(orgId: string): Promise<number> {
    return (await app.inject({ url: `/v1/orgs/${orgId}/widgets?limit=1`, headers: auth })).json().count;
  }

  beforeAll(async () => {
    t = await createTestPlatform({ env: { RATE_LIMIT_PRINCIPAL: '1000000', RATE_LIMIT_ORG: '1000000', PRESSURE_MAX_EVENT_LOOP_DELAY_MS: '0' } });
    await createWidgetTable(t.db.owner);
    app = await createEdgeTestApp(t, controls);
  });
  afterAll(async () => {
    await app?.close();
    await t?.close();
  });

  it('a server error after the write rolls the write back with the claim: retries never pile up effects', async () => {
    const orgId = newId();
    for (let i = 0; i < 3; i++) expect((await post(orgId, 'widgets-then-fail', 'fail-after-write')).statusCode).toBe(500);
    expect(await widgets(orgId)).toBe(0);
    // Without a key the same route's write is its own transaction (nothing to guard).
    expect((await post(orgId, 'widgets-then-fail', undefined)).statusCode).toBe(500);
    expect(await widgets(orgId)).toBe(1);
  });

  it('an owner whose claim was taken over cannot commit its effect afterwards (fenced): exactly one resource', async () => {
    const orgId = newId();
    const first = post(orgId, 'slow-widgets', 'fenced');
    for (let i = 0; i < 200 && !controls.release; i++) await sleep(10);
    const releaseFirst = controls.release!;
    controls.release = undefined;
    // A retry took the claim over while the owner was stalled (its lease lapsed: a starved heartbeat, a
    // long GC pause, a partition). The retry's own run is this row's new token.
    await sql`update idempotency_keys set claim_token = 'taken-over-by-retry' where state = 'in_flight'`.execute(t.db.app);
    releaseFirst();
    const late = await first;
    expect(late.statusCode).toBe(409);
    expect(late.json().code).toBe('IDEMPOTENCY.IN_FLIGHT');
    expect(await widgets(orgId)).toBe(0);
  });

  it('the stored response and the effect are in one transaction: a committed widget always has its replay', async () => {
    const orgId = newId();
    const created = await post(orgId, 'widgets', 'atomic-1', 'atomic');
    expect(created.statusCode).toBe(201);
    const { rows } = await sql<{ state: string; response_status: number }>`
      select state, response_status from idempotency_keys where state <> 'in_flight' and response_status = 201`.execute(t.db.app);
    expect(rows.length).toBeGreaterThan(0);
    const again = await post(orgId, 'widgets', 'atomic-1', 'atomic');
    expect(again.headers['idempotent-replayed']).toBe('true');
    expect(again.json()).toEqual(created.json());
    expect(await widgets(orgId)).toBe(1);
  });
});
