/**
 * The API contract check (`npm run contract:check`, a CI step):
 *
 *   1. drift: the OpenAPI document this server generates is exactly the committed `openapi.json`;
 *   2. breaking changes: that document against the **previous release's** (deploy/releases.json), read from
 *      the snapshot committed at release time, `deploy/openapi/<version>.json` (no rebuild, no install).
 *
 * Breaking (docs/api-versioning.md), for every operation of the previous release:
 *   - the operation removed, or it now requires authentication;
 *   - status codes changed: a 2xx response removed or a new 2xx added (a client branches on them), a
 *     content type of a request or 2xx response removed;
 *   - requests: a parameter removed, newly required or added as required; a body newly required; a body
 *     property removed or newly required; a narrowed type (a type, enum value or union member no longer
 *     accepted, a tighter min/max/length/pattern/format, `additionalProperties: false` added);
 *   - 2xx responses: a property removed or no longer always present; a widened type (a new type such as
 *     `null`, a new enum value, a union member added).
 * Allowed: anything additive, and every change to an operation the previous release had deprecated with its
 * sunset (`x-sunset`, or the date in its description) passed. A new API version is new paths (additive).
 *
 *   npm run contract:check                 drift + breaking changes against the previous release
 *   npm run contract:check -- --snapshot   write deploy/openapi/<previous version>.json (at release time)
 *   npm run contract:check -- --against <git ref | file.json>   breaking changes against another document
 *
 * The snapshot is the release commit's committed `clients/typescript/openapi.json`; a release from before
 * that file existed (0.1.0) is generated once from a `git archive` of its commit, run with this checkout's
 * node_modules (its own lockfile is not installed: the spec depends on routes and schemas, not on versions).
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

type Json = Record<string, any>;
const METHODS = ['get', 'put', 'post', 'delete', 'patch', 'options', 'head'];
const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');

/** The day an operation deprecated in `op` is removed: `x-sunset`, else the date deprecation.ts writes in its description. */
export function sunsetOf(op: Json): Date | undefined {
  const raw = op['x-sunset'] ?? /removed on (\d{4}-\d{2}-\d{2})/.exec(op.description ?? '')?.[1];
  const t = raw ? Date.parse(raw) : NaN;
  return Number.isNaN(t) ? undefined : new Date(t);
}

function deref(spec: Json, schema: Json | undefined): Json | undefined {
  let s = schema;
  for (let i = 0; s?.$ref && i < 20; i++) s = s.$ref.replace(/^#\//, '').split('/').map((k: string) => k.replace(/~1/g, '/').replace(/~0/g, '~')).reduce((o: Json | undefined, k: string) => o?.[k], spec);
  return s;
}

type Dir = 'request' | 'response';
interface Ctx {
  prev: Json;
  next: Json;
  dir: Dir;
  out: string[];
  seen: Set<string>;
}

const typeOfValue = (v: unknown) => (v === null ? 'null' : Array.isArray(v) ? 'array' : Number.isInteger(v) ? 'integer' : typeof v);

/** Resolves allOf (TypeBox Intersect) into one object schema; other keywords are kept. */
function flatten(spec: Json, s: Json | undefined): Json | undefined {
  const d = deref(spec, s);
  if (!d?.allOf) return d;
  const parts = (d.allOf as Json[]).map((p) => flatten(spec, p) ?? {});
  const { allOf: _allOf, ...rest } = d;
  return {
    ...rest,
    type: rest.type ?? (parts.some((p) => p.properties) ? 'object' : undefined),
    properties: Object.assign({}, ...parts.map((p) => p.properties ?? {}), rest.properties ?? {}),
    required: [...new Set([...(rest.required ?? []), ...parts.flatMap((p) => p.required ?? [])])],
    ...(parts.some((p) => p.additionalProperties === false) || rest.additionalProperties === false ? { additionalProperties: false } : {}),
  };
}

/** The alternatives of a union (anyOf/oneOf), or the schema itself. */
const alternatives = (spec: Json, s: Json | undefined): Json[] => {
  const d = flatten(spec, s);
  const alts = d?.anyOf ?? d?.oneOf;
  return alts ? (alts as Json[]).flatMap((a) => alternatives(spec, a)) : d ? [d] : [];
};

/** The JSON types a schema admits ('any' when it does not say). */
function typesOf(spec: Json, s: Json | undefined): Set<string> {
  const out = new Set<string>();
  for (const a of alternatives(spec, s)) {
    if (a.const !== undefined) out.add(typeOfValue(a.const));
    else if (Array.isArray(a.enum)) for (const v of a.enum) out.add(typeOfValue(v));
    else if (a.type) for (const t of [a.type].flat()) out.add(t);
    else if (a.properties) out.add('object');
    else return new Set(['any']);
    if (a.nullable) out.add('null');
  }
  return out.size ? out : new Set(['any']);
}
const admits = (types: Set<string>, t: string) => types.has('any') || types.has(t) || (t === 'integer' && types.has('number'));

/** The literal values a schema is limited to, or undefined when it is open. */
function literals(spec: Json, s: Json | undefined): Set<string> | undefined {
  const out = new Set<string>();
  for (const a of alternatives(spec, s)) {
    if (a.const !== undefined) out.add(JSON.stringify(a.const));
    else if (Array.isArray(a.enum)) for (const v of a.enum) out.add(JSON.stringify(v));
    else if (a.type === 'null') out.add('null');
    else return undefined;
  }
  return out.size ? out : undefined;
}

const BOUNDS: Array<[keyword: string, tighter: (before: number | undefined, after: number) => boolean]> = [
  ['maxLength', (b, a) => b === undefined || a < b],
  ['minLength', (b, a) => b === undefined || a > b],
  ['maximum', (b, a) => b === undefined || a < b],
  ['exclusiveMaximum', (b, a) => b === undefined || a < b],
  ['minimum', (b, a) => b === undefined || a > b],
  ['exclusiveMinimum', (b, a) => b === undefined || a > b],
  ['maxItems', (b, a) => b === undefined || a < b],
  ['minItems', (b, a) => b === undefined || a > b],
  ['maxProperties', (b, a) => b === undefined || a < b],
];

/**
 * Compares two schemas in a direction: a request schema may only accept more, a response schema may only
 * promise more (produce a subset of what it produced before, with at least the same properties).
 */
function compareSchema(c: Ctx, before: Json | undefined, after: Json | undefined, where: string): void {
  if (!before || !after) return;
  const key = `${c.dir}|${where}|${JSON.stringify(before).length}|${before.$ref ?? ''}|${after.$ref ?? ''}`;
  if (c.seen.has(key)) return;
  c.seen.add(key);
  const problem = (m: string) => c.out.push(`${where}: ${m}`);

  const tb = typesOf(c.prev, before);
  const ta = typesOf(c.next, after);
  const [wide, narrow] = c.dir === 'request' ? [tb, ta] : [ta, tb];
  const lost = [...wide].filter((t) => t !== 'any' && !admits(narrow, t));
  if (wide.has('any') && !narrow.has('any')) lost.push('any');
  if (lost.length) problem(c.dir === 'request' ? `type narrowed: no longer accepts ${lost.join(', ')}` : `type widened: may now be ${lost.join(', ')}`);

  const lb = literals(c.prev, before);
  const la = literals(c.next, after);
  if (c.dir === 'request' && la) {
    const gone = lb ? [...lb].filter((v) => !la.has(v)) : ['any value but ' + [...la].join(', ')];
    if (gone.length) problem(`no longer accepts ${gone.join(', ')}`);
  }
  if (c.dir === 'response' && la !== undefined && lb !== undefined) {
    const added = [...la].filter((v) => !lb.has(v) && v !== 'null');
    if (added.length) problem(`may now return ${added.join(', ')}`);
  }

  // Walk into the single non-null alternative on each side (TypeBox Union([X, Null]) is anyOf [X, null]).
  const nonNull = (spec: Json, s: Json) => alternatives(spec, s).filter((a) => a.type !== 'null');
  const ab = nonNull(c.prev, before);
  const aa = nonNull(c.next, after);
  if (ab.length !== 1 || aa.length !== 1) {
    // Unions of several shapes: compared member by member when the count is unchanged.
    if (ab.length === aa.length) ab.forEach((b, i) => compareSchema(c, b, aa[i], `${where}|${i}`));
    return;
  }
  const b = ab[0]!;
  const a = aa[0]!;

  if (c.dir === 'request') {
    for (const [k, tighter] of BOUNDS) if (typeof a[k] === 'number' && tighter(b[k], a[k])) problem(`${k} tightened (${b[k] ?? 'none'} → ${a[k]})`);
    if (a.pattern && a.pattern !== b.pattern) problem(`pattern ${b.pattern ? 'changed' : 'added'} (${a.pattern})`);
    if (a.format && a.format !== b.format) problem(`format ${b.format ? 'changed' : 'added'} (${a.format})`);
    if (a.additionalProperties === false && b.additionalProperties !== false && (b.type === 'object' || b.properties)) problem('no longer accepts additional properties');
  }

  if (b.properties || a.properties) {
    const pb = b.properties ?? {};
    const pa = a.properties ?? {};
    const rb = new Set<string>(b.required ?? []);
    const ra = new Set<string>(a.required ?? []);
    for (const name of Object.keys(pb)) {
      if (!(name in pa)) {
        if (c.dir === 'response' || a.additionalProperties === false || a.additionalProperties === undefined) problem(`property ${name} removed`);
        continue;
      }
      if (c.dir === 'response' && rb.has(name) && !ra.has(name)) problem(`property ${name} is no longer always present`);
      compareSchema(c, pb[name], pa[name], `${where}.${name}`);
    }
    if (c.dir === 'request') for (const name of ra) if (!rb.has(name)) problem(`property ${name} is now required`);
  }
  if (b.items || a.items) compareSchema(c, b.items, a.items, `${where}[]`);
  if (typeof b.additionalProperties === 'object' && typeof a.additionalProperties === 'object') compareSchema(c, b.additionalProperties, a.additionalProperties, `${where}{}`);
}

const paramKey = (spec: Json, p: Json) => {
  const d = deref(spec, p)!;
  return `${d.in}:${String(d.name).toLowerCase()}`;
};

export interface ContractOptions {
  /** "Now" for sunset dates (default: the current time). */
  now?: Date;
}

export function breakingChanges(prev: Json, next: Json, opts: ContractOptions = {}): string[] {
  const now = opts.now ?? new Date();
  const problems: string[] = [];
  const ctx = (dir: Dir): Ctx => ({ prev, next, dir, out: problems, seen: new Set() });
  for (const [p, prevItem] of Object.entries<Json>(prev.paths ?? {})) {
    for (const method of METHODS) {
      const before = prevItem[method];
      if (!before) continue;
      const sunset = sunsetOf(before);
      if (before.deprecated && sunset && sunset.getTime() <= now.getTime()) continue;
      const id = `${method.toUpperCase()} ${p}`;
      const after = next.paths?.[p]?.[method];
      if (!after) {
        problems.push(`${id}: removed${before.deprecated ? ` before its sunset (${sunset?.toISOString().slice(0, 10) ?? 'none declared'})` : ' without a deprecation'}`);
        continue;
      }
      const secured = (op: Json, spec: Json) => {
        const s = op.security ?? spec.security ?? [];
        return s.length > 0 && !s.some((r: Json) => Object.keys(r).length === 0);
      };
      if (!secured(before, prev) && secured(after, next)) problems.push(`${id}: now requires authentication`);

      // Status codes.
      const ok = (op: Json) => Object.keys(op.responses ?? {}).filter((code) => /^2/.test(code));
      const okBefore = ok(before);
      const okAfter = ok(after);
      for (const code of okBefore) if (!okAfter.includes(code)) problems.push(`${id}: response ${code} removed`);
      for (const code of okAfter) if (!okBefore.includes(code) && okBefore.length > 0) problems.push(`${id}: new success status ${code} (was ${okBefore.join(', ')})`);
      for (const code of okBefore.filter((x) => okAfter.includes(x))) {
        const cb = deref(prev, before.responses[code])?.content ?? {};
        const ca = deref(next, after.responses[code])?.content ?? {};
        for (const type of Object.keys(cb)) {
          if (!ca[type]) problems.push(`${id}: response ${code} no longer ${type}`);
          else compareSchema(ctx('response'), cb[type].schema, ca[type].schema, `${id}: response ${code}`);
        }
      }

      // Parameters.
      const params = (op: Json, item: Json, spec: Json) => {
        const m = new Map<string, Json>();
        for (const raw of [...(item.parameters ?? []), ...(op.parameters ?? [])]) m.set(paramKey(spec, raw), deref(spec, raw)!);
        return m;
      };
      const pb = params(before, prevItem, prev);
      const pa = params(after, next.paths[p], next);
      for (const [k, param] of pb) {
        const now2 = pa.get(k);
        if (!now2) problems.push(`${id}: parameter ${k} removed`);
        else {
          if (now2.required && !param.required) problems.push(`${id}: parameter ${k} is now required`);
          compareSchema(ctx('request'), param.schema, now2.schema, `${id}: parameter ${k}`);
        }
      }
      for (const [k, param] of pa) if (!pb.has(k) && param.required) problems.push(`${id}: new required parameter ${k}`);

      // Request body.
      const bb = deref(prev, before.requestBody);
      const ba = deref(next, after.requestBody);
      if (ba?.required && !bb) problems.push(`${id}: a request body is now required`);
      else if (bb && !ba) {
        if (Object.keys(bb.content ?? {}).length) problems.push(`${id}: request body no longer accepted`);
      } else if (bb && ba) {
        if (ba.required && !bb.required) problems.push(`${id}: a request body is now required`);
        for (const type of Object.keys(bb.content ?? {})) {
          if (!ba.content?.[type]) problems.push(`${id}: request body no longer accepts ${type}`);
          else compareSchema(ctx('request'), bb.content[type].schema, ba.content[type].schema, `${id}: body`);
        }
      }
    }
  }
  return problems;
}

// ---------------------------------------------------------------------------------------------------------
// The previous release's document.

export interface Release {
  version: string;
  commit: string;
}
export const previousRelease = (root = ROOT): Release =>
  (JSON.parse(fs.readFileSync(path.join(root, 'deploy/releases.json'), 'utf8')) as { previous: Release }).previous;
export const snapshotFile = (release: Release, root = ROOT) => path.join(root, 'deploy/openapi', `${release.version}.json`);

/** The committed snapshot of the release's document, if it is there and is of that commit. */
export function readSnapshot(release: Release, root = ROOT): Json | undefined {
  const file = snapshotFile(release, root);
  if (!fs.existsSync(file)) return undefined;
  const spec = JSON.parse(fs.readFileSync(file, 'utf8')) as Json;
  return spec.info?.['x-plinth-release']?.commit === release.commit ? spec : undefined;
}

/** The release's document from git: its committed openapi.json, else generated from a `git archive` (no install). */
export async function releaseSpecFromGit(release: Release, root = ROOT): Promise<Json> {
  execFileSync('git', ['cat-file', '-e', `${release.commit}^{commit}`], { cwd: root, stdio: 'ignore' });
  let spec: Json;
  try {
    spec = JSON.parse(execFileSync('git', ['show', `${release.commit}:clients/typescript/openapi.json`], { cwd: root, encoding: 'utf8', maxBuffer: 64 << 20, stdio: ['ignore', 'pipe', 'ignore'] }));
  } catch {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'plinth-contract-'));
    try {
      execFileSync('bash', ['-c', `git archive ${release.commit} | tar -x -C '${dir}'`], { cwd: root });
      fs.symlinkSync(path.join(root, 'node_modules'), path.join(dir, 'node_modules'));
      const out = path.join(dir, 'openapi.out.json');
      fs.writeFileSync(
        path.join(dir, 'write-openapi.mts'),
        `const { createTestPlatform } = await import('./test/helpers/test-platform.ts');
const p = await createTestPlatform();
const res = await p.app.inject({ url: '/openapi.json' });
if (res.statusCode !== 200) throw new Error('/openapi.json answered ' + res.statusCode);
(await import('node:fs')).writeFileSync(${JSON.stringify(out)}, res.body);
await p.close();
process.exit(0);
`,
      );
      execFileSync(process.execPath, ['--import', 'tsx', 'write-openapi.mts'], { cwd: dir, stdio: ['ignore', 'ignore', 'inherit'], env: { ...process.env, LOG_LEVEL: 'silent' } });
      spec = JSON.parse(fs.readFileSync(out, 'utf8'));
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  }
  spec.info = { ...spec.info, 'x-plinth-release': { version: release.version, commit: release.commit } };
  return spec;
}

export interface Accepted {
  change: string;
  reason: string;
}
/** Reviewed exceptions for this previous release (deploy/openapi/accepted-breaks.json); they lapse with it. */
export function acceptedFor(release: Release, root = ROOT): Accepted[] {
  const file = path.join(root, 'deploy/openapi/accepted-breaks.json');
  if (!fs.existsSync(file)) return [];
  const all = JSON.parse(fs.readFileSync(file, 'utf8')) as Record<string, unknown>;
  const list = all[release.version];
  return Array.isArray(list) ? (list as Accepted[]).filter((a) => typeof a.change === 'string' && typeof a.reason === 'string' && a.reason.trim() !== '') : [];
}

const specText = (spec: unknown) => `${JSON.stringify(spec, null, 2)}\n`;

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const args = process.argv.slice(2);
  const release = previousRelease();
  if (args[0] === '--snapshot') {
    const spec = await releaseSpecFromGit(release);
    fs.mkdirSync(path.dirname(snapshotFile(release)), { recursive: true });
    fs.writeFileSync(snapshotFile(release), specText(spec));
    console.log(`wrote ${path.relative(process.cwd(), snapshotFile(release))} (release ${release.version}, ${release.commit.slice(0, 8)})`);
    process.exit(0);
  }

  const { buildOpenApi } = await import('../../scripts/openapi.ts');
  const current = await buildOpenApi();
  let failed = false;
  if (args[0] !== '--against') {
    const committed = fs.readFileSync(path.join(ROOT, 'clients/typescript/openapi.json'), 'utf8');
    if (committed !== specText(current)) {
      console.error('drift: clients/typescript/openapi.json is not what the server generates (npm run client:generate)');
      failed = true;
    } else console.log('no drift: clients/typescript/openapi.json is what the server generates');
  }

  let previous: Json;
  let label: string;
  if (args[0] === '--against') {
    const target = args[1] ?? 'origin/main';
    previous = fs.existsSync(target)
      ? JSON.parse(fs.readFileSync(target, 'utf8'))
      : JSON.parse(execFileSync('git', ['show', `${target}:clients/typescript/openapi.json`], { cwd: ROOT, encoding: 'utf8', maxBuffer: 64 << 20 }));
    label = target;
  } else {
    const snap = readSnapshot(release);
    if (snap) previous = snap;
    else {
      console.warn(`no snapshot of release ${release.version} at ${path.relative(process.cwd(), snapshotFile(release))}: generating it from git (commit it: npm run contract:check -- --snapshot)`);
      previous = await releaseSpecFromGit(release);
    }
    label = `release ${release.version} (${release.commit.slice(0, 8)})`;
  }
  const accepted = args[0] === '--against' ? [] : acceptedFor(release);
  const all = breakingChanges(previous, current);
  const problems = all.filter((p) => !accepted.some((a) => a.change === p));
  for (const a of accepted) console.log(`${all.includes(a.change) ? 'accepted' : 'accepted, no longer seen (remove it)'}: ${a.change}`);
  for (const p of problems) console.error(`breaking: ${p}`);
  console.log(problems.length === 0 ? `no breaking changes against ${label}` : `${problems.length} breaking change(s) against ${label}: deprecate first (docs/api-versioning.md), or add a new version`);
  process.exit(problems.length === 0 && !failed ? 0 : 1);
}
