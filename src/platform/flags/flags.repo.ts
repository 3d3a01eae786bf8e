import { sql, type Kysely, type Transaction } from 'kysely';
import type { DB, DbScope } from '../db/database.ts';
import { newId } from '../ids.ts';

export type FlagTables = Pick<DB, 'feature_flags' | 'feature_flag_overrides' | 'feature_flag_changes' | 'feature_flag_exposures'>;
type Scope = DbScope<FlagTables>;

const FLAG_COLUMNS = ['key', 'description', 'default_value', 'rules', 'rollout', 'ramp', 'killed', 'rollout_full_since', 'updated_at'] as const;

export interface FlagRow {
  key: string;
  description: string;
  default_value: unknown;
  rules: unknown;
  rollout: unknown;
  ramp: unknown;
  killed: boolean;
  rollout_full_since: Date | null;
  updated_at: Date;
}

export async function findFlag(db: Scope, key: string): Promise<FlagRow | undefined> {
  return db.app.selectFrom('feature_flags').select(FLAG_COLUMNS).where('key', '=', key).executeTakeFirst();
}

/** The tenant's override of a flag (RLS: only that tenant's row is visible). */
export async function findOverride(db: Scope, tenantId: string, key: string): Promise<unknown | undefined> {
  const row = await db.withTenant(tenantId, (trx) =>
    trx.selectFrom('feature_flag_overrides').select('value').where('flag_key', '=', key).executeTakeFirst(),
  );
  return row?.value;
}

export async function listFlags(db: Scope): Promise<FlagRow[]> {
  return db.app.selectFrom('feature_flags').select(FLAG_COLUMNS).orderBy('key').execute();
}

/** The columns an operator changes; JSON values are passed as JSON text. */
export interface FlagPatch {
  default_value?: string;
  description?: string;
  rules?: string;
  rollout?: string | null;
  ramp?: string | null;
  killed?: boolean;
  rollout_full_since?: Date | null;
}

/**
 * Changing a flag is an operator action: the app role may only read definitions, so this takes the owner.
 * The change and its log row commit together; `change` sees the row as it was (undefined: a new flag).
 */
export async function changeFlag(
  owner: Kysely<FlagTables>,
  key: string,
  change: (before: FlagRow | undefined) => { patch: FlagPatch; action: string; actor: string } | null,
): Promise<{ before: FlagRow | undefined; after: FlagRow } | null> {
  return owner.transaction().execute(async (trx) => {
    const before = await trx.selectFrom('feature_flags').select(FLAG_COLUMNS).where('key', '=', key).forUpdate().executeTakeFirst();
    const decided = change(before);
    if (!decided) return null;
    const { patch, action, actor } = decided;
    const after = before
      ? await trx.updateTable('feature_flags').set({ ...patch, updated_at: sql`now()` }).where('key', '=', key).returning(FLAG_COLUMNS).executeTakeFirstOrThrow()
      : await trx.insertInto('feature_flags').values({ key, default_value: patch.default_value ?? 'null', description: patch.description ?? '', ...patch })
        .returning(FLAG_COLUMNS).executeTakeFirstOrThrow();
    await logChange(trx, key, action, actor, before, after);
    return { before, after };
  });
}

async function logChange(trx: Transaction<FlagTables>, key: string, action: string, actor: string, before: unknown, after: unknown): Promise<void> {
  await trx
    .insertInto('feature_flag_changes')
    .values({ id: newId(), flag_key: key, action, actor, before: before === undefined ? null : JSON.stringify(before), after: JSON.stringify(after) })
    .execute();
}

export async function upsertOverride(db: Scope, tenantId: string, key: string, value: unknown): Promise<void> {
  const json = JSON.stringify(value);
  await db.withTenant(tenantId, (trx) =>
    trx
      .insertInto('feature_flag_overrides')
      .values({ tenant_id: tenantId, id: newId(), flag_key: key, value: json })
      .onConflict((oc) => oc.columns(['tenant_id', 'flag_key']).doUpdateSet({ value: json, updated_at: sql`now()` }))
      .execute(),
  );
}

export async function deleteOverride(db: Scope, tenantId: string, key: string): Promise<boolean> {
  const res = await db.withTenant(tenantId, (trx) => trx.deleteFrom('feature_flag_overrides').where('flag_key', '=', key).executeTakeFirst());
  return Number(res.numDeletedRows) > 0;
}

/** Logs an override change (the override itself lives under RLS in the tenant's context). */
export async function logOverrideChange(owner: Kysely<FlagTables>, key: string, action: string, actor: string, after: unknown): Promise<void> {
  await owner.transaction().execute((trx) => logChange(trx, key, action, actor, undefined, after));
}

export async function listChanges(db: Scope, key: string, limit: number) {
  return db.owner
    .selectFrom('feature_flag_changes')
    .select(['id', 'action', 'actor', 'before', 'after', 'at'])
    .where('flag_key', '=', key)
    .orderBy('at', 'desc')
    .orderBy('id', 'desc')
    .limit(limit)
    .execute();
}

/** Adds one instance's counts for the current minute (one statement for every flag exposed since the last flush). */
export async function addExposures(db: Scope, rows: { key: string; requests: number; errors: number }[]): Promise<void> {
  if (rows.length === 0) return;
  await db.app
    .insertInto('feature_flag_exposures')
    .values(rows.map((r) => ({ flag_key: r.key, window_start: sql<Date>`date_trunc('minute', now())`, requests: r.requests, errors: r.errors })))
    .onConflict((oc) =>
      oc.columns(['flag_key', 'window_start']).doUpdateSet({
        requests: sql`feature_flag_exposures.requests + excluded.requests`,
        errors: sql`feature_flag_exposures.errors + excluded.errors`,
      }),
    )
    .execute();
}

export async function exposureSince(db: Scope, key: string, since: Date): Promise<{ requests: number; errors: number }> {
  const row = await db.app
    .selectFrom('feature_flag_exposures')
    .select([sql<string>`coalesce(sum(requests), 0)`.as('requests'), sql<string>`coalesce(sum(errors), 0)`.as('errors')])
    .where('flag_key', '=', key)
    .where('window_start', '>=', sql<Date>`date_trunc('minute', ${since}::timestamptz)`)
    .executeTakeFirstOrThrow();
  return { requests: Number(row.requests), errors: Number(row.errors) };
}

export async function ramping(db: Scope): Promise<string[]> {
  const rows = await db.app.selectFrom('feature_flags').select('key').where('ramp', 'is not', null).where('killed', '=', false).execute();
  return rows.map((r) => r.key);
}

export async function staleFlags(db: Scope, days: number): Promise<FlagRow[]> {
  return db.app
    .selectFrom('feature_flags')
    .select(FLAG_COLUMNS)
    .where('rollout_full_since', '<', sql<Date>`now() - make_interval(days => ${days})`)
    .orderBy('rollout_full_since')
    .execute();
}

export async function deleteExposuresBefore(db: Scope, before: Date): Promise<void> {
  await db.app.deleteFrom('feature_flag_exposures').where('window_start', '<', before).execute();
}
