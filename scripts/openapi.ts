/**
 * The OpenAPI document as the API serves it (`/openapi.json`), built from the real composition over a
 * throwaway embedded database. `npm run openapi` writes it to a file (default openapi.json) for client
 * generators; test/openapi-lint.test.ts lints it with Redocly's recommended ruleset.
 */
import fs from 'node:fs';
import { pathToFileURL } from 'node:url';

export async function buildOpenApi(): Promise<Record<string, unknown>> {
  const { createTestPlatform } = await import('../test/helpers/test-platform.ts');
  const p = await createTestPlatform();
  try {
    const res = await p.app.inject({ url: '/openapi.json' });
    if (res.statusCode !== 200) throw new Error(`/openapi.json answered ${res.statusCode}`);
    return res.json() as Record<string, unknown>;
  } finally {
    await p.close();
  }
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const out = process.argv[2] ?? 'openapi.json';
  fs.writeFileSync(out, `${JSON.stringify(await buildOpenApi(), null, 2)}\n`);
  console.log(`wrote ${out}`);
  await (await import('../src/platform/testing/test-db.ts')).closeIdleTestDatabases();
}
