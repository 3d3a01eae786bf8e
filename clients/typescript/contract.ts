/**
 * Breaking-change check of the API contract: the OpenAPI document this server generates against a
 * previous committed one. Breaking: an operation removed, a 2xx response removed, a parameter or body
 * property newly required, a property removed from a 2xx response — unless the operation was already
 * deprecated (`deprecated: true`, see src/platform/http/deprecation.ts) in the previous version. A new
 * API version is new paths (additive), so it never breaks the old ones.
 *
 *   npm run contract:check -- [base-ref]   (default origin/main, else HEAD: the committed openapi.json there)
 */
import { execFileSync } from 'node:child_process';
import { pathToFileURL } from 'node:url';

type Json = Record<string, any>;
const METHODS = ['get', 'put', 'post', 'delete', 'patch', 'options', 'head'];

function deref(spec: Json, schema: Json | undefined): Json | undefined {
  let s = schema;
  for (let i = 0; s?.$ref && i < 10; i++) s = s.$ref.replace(/^#\//, '').split('/').reduce((o: Json | undefined, k: string) => o?.[k], spec);
  return s;
}
const jsonSchema = (spec: Json, content: Json | undefined) => deref(spec, content?.['application/json']?.schema);
const requiredParams = (op: Json) => new Set<string>((op.parameters ?? []).filter((p: Json) => p.required).map((p: Json) => `${p.in}:${p.name}`));
const propsOf = (s: Json | undefined) => new Set(Object.keys(s?.properties ?? {}));

export function breakingChanges(prev: Json, next: Json): string[] {
  const problems: string[] = [];
  for (const [path, prevItem] of Object.entries<Json>(prev.paths ?? {})) {
    for (const method of METHODS) {
      const before = prevItem[method];
      if (!before || before.deprecated) continue;
      const id = `${method.toUpperCase()} ${path}`;
      const after = next.paths?.[path]?.[method];
      if (!after) {
        problems.push(`${id}: removed without a deprecation`);
        continue;
      }
      for (const code of Object.keys(before.responses ?? {}).filter((c) => /^2/.test(c))) {
        if (!after.responses?.[code]) problems.push(`${id}: response ${code} removed`);
        else {
          const gone = [...propsOf(jsonSchema(prev, before.responses[code].content))].filter((p) => !propsOf(jsonSchema(next, after.responses[code].content)).has(p));
          if (gone.length > 0) problems.push(`${id}: response ${code} no longer has ${gone.join(', ')}`);
        }
      }
      const was = requiredParams(before);
      for (const p of requiredParams(after)) if (!was.has(p)) problems.push(`${id}: parameter ${p} is now required`);
      const bodyBefore = jsonSchema(prev, before.requestBody?.content);
      const bodyAfter = jsonSchema(next, after.requestBody?.content);
      if (bodyAfter && !before.requestBody && after.requestBody?.required) problems.push(`${id}: a request body is now required`);
      const requiredBefore = new Set<string>(bodyBefore?.required ?? []);
      for (const r of bodyAfter?.required ?? []) if (!requiredBefore.has(r)) problems.push(`${id}: body property ${r} is now required`);
    }
  }
  return problems;
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const candidates = process.argv[2] ? [process.argv[2]] : ['origin/main', 'HEAD'];
  let previous: Json | undefined;
  for (const ref of candidates) {
    try {
      previous = JSON.parse(execFileSync('git', ['show', `${ref}:clients/typescript/openapi.json`], { encoding: 'utf8', maxBuffer: 64 * 1024 * 1024, stdio: ['ignore', 'pipe', 'ignore'] }));
      console.log(`comparing with clients/typescript/openapi.json at ${ref}`);
      break;
    } catch {
      // try the next ref
    }
  }
  if (!previous) {
    console.log('no previous committed openapi.json: nothing to compare');
    process.exit(0);
  }
  const { buildOpenApi } = await import('../../scripts/openapi.ts');
  const problems = breakingChanges(previous, await buildOpenApi());
  for (const p of problems) console.error(`breaking: ${p}`);
  console.log(problems.length === 0 ? 'no breaking changes' : `${problems.length} breaking change(s): deprecate first, or add a new version`);
  process.exit(problems.length === 0 ? 0 : 1);
}
