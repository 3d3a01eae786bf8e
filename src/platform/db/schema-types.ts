import { generate, PostgresDialect } from 'kysely-codegen';
import { openDatabase } from './database.ts';
import { migrate } from '../migrate/migrator.ts';

/** Where the generated table types live: every repo picks its own tables from `DB` there. */
export const SCHEMA_TYPES_FILE = new URL('./schema.generated.ts', import.meta.url);

/**
 * The Kysely types of the migrated schema, as kysely-codegen writes them: a fresh in-memory PGlite runs
 * every migration and its catalog is introspected. Types therefore always come from the migrations, never
 * from a hand-kept copy; `npm run db:types` writes the file and a test fails when it is stale.
 */
export async function generateSchemaTypes(): Promise<string> {
  const db = await openDatabase({});
  try {
    await migrate(db.owner, { kind: db.kind });
    return await generate({
      // kysely-codegen carries its own copy of Kysely's class types; the instance is the same at run time.
      db: db.owner as never,
      dialect: new PostgresDialect(),
      // The migration ledger is the migrator's own business, not a table any module queries.
      excludePattern: 'plinth_migrations',
      // Both adapters parse int8 as a JS number (database.ts); counts and sequence numbers stay below 2^53.
      typeMapping: { int8: 'number' },
      print: false,
      outFile: null,
    });
  } finally {
    await db.close();
  }
}
