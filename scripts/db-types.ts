// Writes src/platform/db/schema.generated.ts from the migrations (see generateSchemaTypes).
import fs from 'node:fs';
import { generateSchemaTypes, SCHEMA_TYPES_FILE } from '../src/platform/db/schema-types.ts';

fs.writeFileSync(SCHEMA_TYPES_FILE, await generateSchemaTypes());
console.log(`wrote ${SCHEMA_TYPES_FILE.pathname.split('/').slice(-4).join('/')}`);
