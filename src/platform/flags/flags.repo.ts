import { sql, type Kysely } from 'kysely';
import type { DB, DbScope } from '../db/database.ts';
import { newId } from '../ids.ts';

export type FlagTables = Pick<DB, 'feature_flags' | 'feature_flag_overrides'>;
type Scope = DbScope<FlagTables>;

export interface FlagRow {
  key: string;
  description: string;
  default_value: unknown;
  updated_at: Date;
}

export async function findDefault(db: Scope, key: string): Promise<unknown | undefined> {
  const row = await db.app.selectFrom('feature_flags').select('default_value').where('key', '=', key).executeTakeFirst();
  return row?.default_value;
}

/** The tenant's override of a flag (RLS: only that tenant's row is visible). */
export async function findOverride(db: Scope, tenantId: string, key: string): Promise<unknown | undefined> {
  const row = await db.withTenant(tenantId, (trx) =>
    trx.selectFrom('feature_flag_overrides').select('value').where('flag_key', '=', key).executeTakeFirst(),
  );
  return row?.value;
}

export async function listFlags(db: Scope): Promise<FlagRow[]> {
  return db.app.selectFrom('feature_flags').select(['key', 'description', 'default_value', 'updated_at']).orderBy('key').execute();
}

/** Defining a flag is an operator action: the app role may only read definitions, so this takes the owner. */
export async function upsertFlag(owner: Kysely<FlagTables>, key: string, defaultValue: unknown, description: string): Promise<FlagRow> {
  const json = JSON.stringify(defaultValue);
  return owner
    .insertInto('feature_flags')
    .values({ key, default_value: json, description })
    .onConflict((oc) => oc.column('key').doUpdateSet({ default_value: json, description, updated_at: sql`now()` }))
    .returning(['key', 'description', 'default_value', 'updated_at'])
    .executeTakeFirstOrThrow();
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
