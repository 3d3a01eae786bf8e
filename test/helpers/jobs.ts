import { Writable } from 'node:stream';
import { sql, type Kysely } from 'kysely';
import { pino, type Logger } from 'pino';
import { runAdminCommand } from '../../src/modules/identity/index.ts';
import { protectTenantTable } from '../../src/platform/migrate/helpers.ts';
import { signup } from './auth.ts';
import type { TestPlatform } from './test-platform.ts';

/** Two real users through the real routes: a platform admin (granted as `plinth admin grant` does) and a plain user. */
export async function adminAndMember(tp: TestPlatform): Promise<{ admin: { authorization: string }; member: { authorization: string } }> {
  const admin = await signup(tp.app);
  const member = await signup(tp.app);
  const code = await runAdminCommand(tp.modules.identity, ['grant', admin.email], () => {});
  if (code !== 0) throw new Error('could not grant platform admin');
  return { admin: admin.auth, member: member.auth };
}

export async function waitFor<T>(probe: () => Promise<T>, done: (v: T) => boolean, timeoutMs = 15_000, stepMs = 20): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await probe();
    if (done(v)) return v;
    if (Date.now() > deadline) throw new Error(`condition not met within ${timeoutMs} ms (last value ${JSON.stringify(v)})`);
    await new Promise((r) => setTimeout(r, stepMs));
  }
}

/** A tenant table under RLS for handlers' effects: a handler can only write it with the event's tenant context. */
export async function createEffectsTable(owner: Kysely<any>, table = 'test_effects'): Promise<void> {
  await sql`create table ${sql.table(table)} (
    tenant_id uuid not null, id bigserial, event_id uuid not null, consumer text not null,
    primary key (tenant_id, id))`.execute(owner);
  await protectTenantTable(owner, table, ['select', 'insert']);
  await sql`grant usage on all sequences in schema public to plinth_app`.execute(owner);
}

/** Effects per (consumer, event), across tenants. */
export async function countEffects(owner: Kysely<any>, table = 'test_effects'): Promise<Map<string, number>> {
  // The owner connection is a superuser in tests (it creates databases), so it reads every tenant's rows.
  const { rows } = await sql<{ key: string; n: number }>`
    select consumer || '/' || event_id as key, count(*)::int as n from ${sql.table(table)} group by 1`.execute(owner);
  return new Map(rows.map((r) => [r.key, r.n]));
}

/** A logger whose JSON lines are kept in memory, to assert what reached the logs. */
export function captureLogger(): { logger: Logger; lines: Array<Record<string, any>> } {
  const lines: Array<Record<string, any>> = [];
  const stream = new Writable({
    write(chunk, _enc, cb) {
      for (const line of String(chunk).split('\n')) if (line.trim()) lines.push(JSON.parse(line));
      cb();
    },
  });
  return { logger: pino({ level: 'debug' }, stream), lines };
}
