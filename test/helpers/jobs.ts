import { Writable } from 'node:stream';
import { sql, type Kysely } from 'kysely';
import { pino, type Logger } from 'pino';
import type { Authenticator } from '../../src/platform/http/auth.ts';
import { protectTenantTable } from '../../src/platform/migrate/helpers.ts';

/** Test-only Authenticator until the identity module lands: 'admin' is a platform admin, 'member' is not. */
export const testAuthenticator: Authenticator = {
  async authenticate(req) {
    const token = req.headers.authorization?.replace(/^Bearer /, '');
    if (token === 'admin' || token === 'member') return { kind: 'user', userId: token, isPlatformAdmin: token === 'admin' };
    return null;
  },
  resolveAccess: async () => null,
};

export const ADMIN = { authorization: 'Bearer admin' };
export const MEMBER = { authorization: 'Bearer member' };

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
