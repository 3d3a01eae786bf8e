import { AjvCompiler } from '@fastify/ajv-compiler';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { AppError } from './errors.ts';
import type { LazyCompilers } from './lazy-compile.ts';

/**
 * Input rules every route gets, whatever its schema says, so that nothing a validator accepts can
 * later fail in Postgres or JavaScript (a 500): no U+0000 or lone surrogate in any string, only finite
 * numbers, dates and times that Postgres and JS both accept, JSON bodies at most MAX_JSON_DEPTH deep
 * and never coerced from another type.
 */

/** Deeper JSON is refused before it is parsed: validators, serializers and audit diffs recurse. */
export const MAX_JSON_DEPTH = 64;

const DATE = /^(\d{4})-(\d{2})-(\d{2})$/;
// RFC 3339 date-time, with the ranges checked in code: no year 0000, no leap second, offsets up to ±15:59
// (beyond, Postgres refuses the value).
const DATE_TIME = /^(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(?:\.\d{1,9})?(?:[Zz]|[+-](\d{2}):(\d{2}))$/;

function validDay(year: number, month: number, day: number): boolean {
  if (year < 1 || month < 1 || month > 12 || day < 1) return false;
  const leap = year % 4 === 0 && (year % 100 !== 0 || year % 400 === 0);
  const days = [31, leap ? 29 : 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31][month - 1]!;
  return day <= days;
}

/** `YYYY-MM-DD`, a real calendar day in years 0001–9999. */
export function isStrictDate(value: string): boolean {
  const m = DATE.exec(value);
  return m !== null && validDay(Number(m[1]), Number(m[2]), Number(m[3]));
}

/** RFC 3339 date-time that both Postgres (timestamptz) and `Date.parse` accept. */
export function isStrictDateTime(value: string): boolean {
  const m = DATE_TIME.exec(value);
  if (!m || !validDay(Number(m[1]), Number(m[2]), Number(m[3]))) return false;
  if (Number(m[4]) > 23 || Number(m[5]) > 59 || Number(m[6]) > 59) return false;
  if (m[7] !== undefined && (Number(m[7]) > 15 || Number(m[8]) > 59)) return false;
  return Number.isFinite(Date.parse(value));
}

// A lone (unpaired) UTF-16 surrogate cannot be encoded as UTF-8: Postgres json/text refuse it.
const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;

// Either character that stringProblem looks for: most strings have neither, and are passed after one scan.
// eslint-disable-next-line no-control-regex -- U+0000 is what it looks for
const SUSPECT = /[\u0000\uD800-\uDFFF]/;

/** Why a string may not be stored, or null. */
export function stringProblem(s: string): string | null {
  if (!SUSPECT.test(s)) return null;
  if (s.includes('\u0000')) return 'must not contain the NUL character (U+0000)';
  if (LONE_SURROGATE.test(s)) return 'must not contain an unpaired UTF-16 surrogate';
  return null;
}

const escapeToken = (key: string | number) => String(key).replace(/~/g, '~0').replace(/\//g, '~1');

/** Where a value sits: its parent's place and its key there (the JSON pointer is built only for a finding). */
interface Place {
  parent: Place | null;
  key: string | number;
}
const pointerOf = (place: Place | null): string => {
  const tokens: string[] = [];
  for (let p = place; p; p = p.parent) tokens.push(escapeToken(p.key));
  return tokens.length === 0 ? '/' : `/${tokens.reverse().join('/')}`;
};

/**
 * The first hostile value in already-parsed input, as a JSON pointer and a message: strings (and object
 * keys) with U+0000 or a lone surrogate, non-finite numbers. Iterative, so depth cannot overflow the stack.
 * Runs on every accepted body (a 1,000-event usage batch is ~10^4 values), so it allocates only a place per
 * container entry and builds a pointer only for what it reports.
 */
export function findHostileValue(root: unknown): { path: string; message: string } | null {
  const values: unknown[] = [root];
  const places: Array<Place | null> = [null];
  while (values.length > 0) {
    const value = values.pop();
    const place = places.pop()!;
    if (typeof value === 'string') {
      const problem = stringProblem(value);
      if (problem) return { path: pointerOf(place), message: problem };
    } else if (typeof value === 'number') {
      if (!Number.isFinite(value)) return { path: pointerOf(place), message: 'must be a finite number' };
    } else if (Array.isArray(value)) {
      for (let i = 0; i < value.length; i++) {
        const v: unknown = value[i];
        // Scalars that cannot be hostile need no entry of their own.
        if (typeof v === 'boolean' || v === null || (typeof v === 'number' && Number.isFinite(v))) continue;
        values.push(v);
        places.push({ parent: place, key: i });
      }
    } else if (value !== null && typeof value === 'object') {
      for (const k of Object.keys(value)) {
        const keyProblem = stringProblem(k);
        if (keyProblem) return { path: pointerOf(place), message: `has a property name that ${keyProblem}` };
        const v: unknown = (value as Record<string, unknown>)[k];
        if (typeof v === 'boolean' || v === null || (typeof v === 'number' && Number.isFinite(v))) continue;
        values.push(v);
        places.push({ parent: place, key: k });
      }
    }
  }
  return null;
}

/** Nesting depth of JSON text, counted without parsing it; stops as soon as `max` is exceeded. */
export function jsonDepthExceeds(text: string, max: number): boolean {
  let depth = 0;
  let inString = false;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (inString) {
      if (c === 92 /* \ */) i++;
      else if (c === 34 /* " */) inString = false;
    } else if (c === 34) inString = true;
    else if (c === 123 /* { */ || c === 91 /* [ */) {
      if (++depth > max) return true;
    } else if (c === 125 /* } */ || c === 93 /* ] */) depth--;
  }
  return false;
}

type Validate = ((data: unknown, ctx?: { parentData: Record<string, unknown>; parentDataProperty: string }) => unknown) & {
  errors?: unknown;
  schemaEnv?: unknown;
};

/** Runs the schema validator, then the global rules on what it accepted (after query coercion). */
function guard(validate: Validate): Validate {
  const guarded: Validate = (data, ctx) => {
    const ok = validate(data, ctx);
    if (ok === false) {
      guarded.errors = validate.errors;
      return false;
    }
    const value = ctx ? ctx.parentData[ctx.parentDataProperty] : data;
    const hostile = findHostileValue(value);
    if (hostile) {
      guarded.errors = [{ keyword: 'hostile', instancePath: hostile.path === '/' ? '' : hostile.path, schemaPath: '#', params: {}, message: hostile.message }];
      return false;
    }
    guarded.errors = null;
    return ok;
  };
  // Fastify passes the parent object (so Ajv may coerce a root value) only to validators that have one.
  guarded.schemaEnv = validate.schemaEnv;
  return guarded;
}

function strictFormats(ajv: { addFormat(name: string, format: { type: 'string'; validate: (s: string) => boolean }): unknown }): void {
  ajv.addFormat('date-time', { type: 'string', validate: isStrictDateTime });
  ajv.addFormat('date', { type: 'string', validate: isStrictDate });
}

const AJV_OPTIONS = { removeAdditional: false, useDefaults: true, allErrors: false, strictNumbers: true } as const;

/**
 * Fastify's validator compiler, twice: JSON bodies are never coerced (`{"title":123}` is a 400, not
 * "123"), query strings, params and headers are (they are text on the wire). Both get the strict
 * date formats, and every validator the global string/number rules.
 */
export function validatorCompilerFactory(compilers: LazyCompilers) {
  const pool = AjvCompiler();
  return (externalSchemas: unknown, _serverOptions: unknown) => {
    const body = pool(externalSchemas as never, { customOptions: { ...AJV_OPTIONS, coerceTypes: false }, onCreate: strictFormats } as never);
    const other = pool(externalSchemas as never, { customOptions: { ...AJV_OPTIONS, coerceTypes: 'array' }, onCreate: strictFormats } as never);
    return (route: { schema: unknown; httpPart?: string; method: string; url: string }) => {
      const { call, compiled } = compilers.lazily(() => (route.httpPart === 'body' ? body : other)(route as never) as Validate);
      // Compiled on first use (lazy-compile.ts); the errors of the last call are the compiled validator's.
      const validate = ((data: unknown, ctx?: never) => {
        const ok = call(data, ctx as never);
        validate.errors = compiled().errors;
        return ok;
      }) as Validate;
      // Ajv validators always have a schemaEnv; Fastify then passes the parent (so a root value can be coerced).
      validate.schemaEnv = true as never;
      return guard(validate);
    };
  };
}

/**
 * The JSON body parser: Fastify's own (prototype poisoning refused), behind a depth limit checked on the
 * raw text, and an empty body read as "no body" (a DELETE or logout sent with Content-Type: application/json).
 */
export function registerJsonParser(app: FastifyInstance<any, any, any, any, any>): void {
  const parse = app.getDefaultJsonParser('error', 'error');
  app.removeContentTypeParser('application/json');
  app.addContentTypeParser('application/json', { parseAs: 'string' }, (request: FastifyRequest, body: string | Buffer, done: (err: Error | null, body?: unknown) => void) => {
    const text = typeof body === 'string' ? body : body.toString('utf8');
    if (text.trim().length === 0) return done(null, undefined);
    if (jsonDepthExceeds(text, MAX_JSON_DEPTH)) {
      return done(new AppError('HTTP.BODY_TOO_DEEP', 400, `The JSON body is nested more than ${MAX_JSON_DEPTH} levels deep`));
    }
    parse(request, text, done);
  });
}
