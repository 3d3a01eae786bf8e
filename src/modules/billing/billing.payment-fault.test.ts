import { fork, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { signup } from '../../../test/helpers/auth.ts';
import { bundleForNode } from '../../../test/helpers/bundle.ts';
import { adminAndMember, waitFor } from '../../../test/helpers/jobs.ts';
import { createTestPlatform, type TestPlatform } from '../../../test/helpers/test-platform.ts';
import { createSandboxGateway } from './billing.gateway-sandbox.ts';

const WORKER = fileURLToPath(new URL('../../../test/fixtures/billing/payment-fault-worker.ts', import.meta.url));

/**
 * Fault test (real Postgres): the worker charging a finalized invoice is killed -9 after the gateway charged
 * and before its transaction committed. A restarted worker redelivers the collection, sends the same
 * idempotency key, gets the same payment back → exactly one charge at the gateway, the invoice paid once.
 */
describe.runIf(Boolean(process.env.TEST_DATABASE_URL))('payment collection: worker killed -9 between the gateway call and the commit', () => {
  let tp: TestPlatform;
  let worker: string;
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'plinth-payfault-'));
  const file = path.join(dir, 'sandbox.jsonl');
  const marker = path.join(dir, 'killed');
  const children: ChildProcess[] = [];

  beforeAll(async () => {
    worker = await bundleForNode(WORKER);
    tp = await createTestPlatform({ seams: { gateway: createSandboxGateway({ file }) } });
  }, 60_000);
  afterAll(async () => {
    for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
    await tp?.close();
    if (worker) fs.rmSync(worker, { force: true });
    fs.rmSync(dir, { recursive: true, force: true });
  });

  const spawn = () => {
    const child = fork(worker, [], {
      execArgv: [],
      stdio: ['ignore', 'ignore', 'inherit', 'ipc'],
      env: { ...process.env, NODE_ENV: 'test', LOG_LEVEL: 'error', DATABASE_URL: tp.testDb.url, REDIS_URL: '', REDIS_PREFIX: tp.config.redisPrefix, PAYMENT_SANDBOX_FILE: file, FAULT_MARKER: marker, JOBS_POLL_MS: '20', JOBS_SWEEP_AFTER_MS: '1000', DATABASE_POOL_MAX: '4' },
    });
    children.push(child);
    return child;
  };
  const exited = (p: ChildProcess) => new Promise<void>((resolve) => (p.exitCode !== null || p.signalCode !== null ? resolve() : p.once('exit', () => resolve())));

  it('exactly one charge, the invoice paid once', async () => {
    const inject = async (method: string, url: string, headers: object, payload?: object) => {
      const res = await tp.app.inject({ method: method as 'GET', url, headers: headers as Record<string, string>, ...(payload ? { payload } : {}) });
      if (res.statusCode >= 300) throw new Error(`${method} ${url}: ${res.statusCode} ${res.body}`);
      return res.json();
    };
    const { admin } = await adminAndMember(tp);
    const product = await inject('POST', '/v1/admin/billing/products', admin, { key: 'plinth', name: 'Plinth' });
    const plan = await inject('POST', '/v1/admin/billing/plans', admin, { productId: product.id, key: 'pro', name: 'Pro', rank: 1 });
    await inject('POST', `/v1/admin/billing/plans/${plan.id}/prices`, admin, { currency: 'USD', interval: 'month', model: 'flat', flatAmount: 4900 });
    const o = await signup(tp.app);
    await inject('PUT', `/v1/orgs/${o.orgId}/billing/payment-method`, o.auth, { token: '4242424242424242' });
    await inject('POST', `/v1/orgs/${o.orgId}/billing/subscription`, o.auth, { planId: plan.id });

    const first = spawn();
    await exited(first);
    expect(first.signalCode).toBe('SIGKILL');
    expect(fs.readFileSync(marker, 'utf8')).toMatch(/^plinth_invoice_.*_attempt_1$/);
    const beforeRestart = (await sql<{ n: number }>`select count(*)::int as n from billing_payment_attempts`.execute(tp.db.owner)).rows[0]!.n;
    expect(beforeRestart).toBe(0); // the local commit never happened

    const second = spawn();
    const invoice = await waitFor(async () => (await inject('GET', `/v1/orgs/${o.orgId}/billing/invoices`, o.auth)).data[0], (i: any) => i?.status === 'paid', 60_000, 100);
    second.kill('SIGTERM');
    await exited(second);

    const charges = createSandboxGateway({ file }).payments().filter((p) => p.metadata.invoiceId === invoice.id);
    expect(charges).toHaveLength(1);
    expect(charges[0]).toMatchObject({ status: 'succeeded', amount: 4900 });
    const attempts = (await inject('GET', `/v1/orgs/${o.orgId}/billing/payments`, o.auth)).data;
    expect(attempts.map((a: any) => [a.attemptNo, a.status, a.gatewayPaymentId])).toEqual([[1, 'succeeded', charges[0]!.gatewayPaymentId]]);
    const paid = await sql<{ n: number }>`select count(*)::int as n from outbox where tenant_id = ${o.orgId} and name = 'billing.invoice_paid'`.execute(tp.db.owner);
    expect(paid.rows[0]!.n).toBe(1);
    expect(invoice).toMatchObject({ amountPaid: 4900, amountDue: 4900 });
  }, 120_000);
});
