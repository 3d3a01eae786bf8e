import fc from 'fast-check';

/**
 * fast-check arbitraries from the JSON Schemas in /openapi.json: values a schema accepts (to reach deep
 * into handlers) and hostile values (to prove no input reaches the database or the JS runtime unchecked).
 */
export type Schema = Record<string, any>;

/** Strings that broke (or could break) something downstream: NUL, lone surrogates, odd dates, numbers as text. */
export const HOSTILE_STRINGS = [
  '\u0000',
  'a\u0000b',
  '\ud800',
  'x\udfffy',
  '\ud83d',
  '',
  ' ',
  '\t\n',
  '😀'.repeat(40),
  'x'.repeat(5000),
  "' OR 1=1 --",
  '"; drop table users; --',
  '../../etc/passwd',
  '%00',
  '%ED%A0%80',
  '${jndi:ldap://x}',
  '<script>alert(1)</script>',
  '0000-01-01T00:00:00Z',
  '2016-12-31T23:59:60Z',
  '2024-02-30T10:00:00Z',
  '2024-01-01T00:00:00+16:00',
  '9999-12-31T23:59:59.999999999-15:59',
  '0000-01-01',
  '2023-02-29',
  '+275760-09-13T00:00:00Z',
  'Infinity',
  '-Infinity',
  'NaN',
  '1e400',
  '-1',
  '00000000-0000-0000-0000-000000000000',
  'ffffffff-ffff-ffff-ffff-ffffffffffff',
  '__proto__',
  'constructor',
];

export const HOSTILE_VALUES: unknown[] = [
  ...HOSTILE_STRINGS,
  null,
  true,
  false,
  0,
  -1,
  1.5,
  2 ** 31,
  Number.MAX_SAFE_INTEGER + 2,
  -(2 ** 63),
  1e308,
  [],
  [null],
  ['\u0000'],
  {},
  { __proto__: { admin: true } },
  JSON.parse('{"__proto__":{"isPlatformAdmin":true}}'),
  { constructor: { prototype: { x: 1 } } },
];

export const hostileValue = (): fc.Arbitrary<unknown> => fc.constantFrom(...HOSTILE_VALUES);

const SAMPLE_PATTERN_CANDIDATES = ['x', 'ISO', 'ISO1', 'PRJ', 'ABC12', 'iso-1', 'a.b', 'flag-key', '1'];

function resolve(schema: Schema, root: Schema): Schema {
  if (schema?.$ref && typeof schema.$ref === 'string') {
    const name = schema.$ref.split('/').pop()!;
    return root.components?.schemas?.[name] ?? {};
  }
  return schema ?? {};
}

/** Values the schema accepts; `ids` supplies real values for known uuid-named fields (e.g. assigneeId). */
export function validValue(schema: Schema, root: Schema, ctx: { ids: Record<string, string[]>; name?: string } = { ids: {} }): fc.Arbitrary<unknown> {
  const s = resolve(schema, root);
  if (s.const !== undefined) return fc.constant(s.const);
  if (s.enum) return fc.constantFrom(...s.enum);
  if (s.anyOf || s.oneOf) return fc.oneof(...(s.anyOf ?? s.oneOf).map((x: Schema) => validValue(x, root, ctx)));
  if (s.allOf) return validValue(Object.assign({}, ...s.allOf), root, ctx);
  const type = Array.isArray(s.type) ? s.type[0] : s.type;
  switch (type) {
    case 'null':
      return fc.constant(null);
    case 'boolean':
      return fc.boolean();
    case 'integer':
      return fc.integer({ min: s.minimum ?? -1000, max: s.maximum ?? 1_000_000 });
    case 'number':
      return fc.double({ min: s.minimum ?? -1e6, max: s.maximum ?? 1e6, noNaN: true, noDefaultInfinity: true });
    case 'array': {
      const min = s.minItems ?? 0;
      return fc.array(validValue(s.items ?? {}, root, { ...ctx, name: undefined }), { minLength: min, maxLength: Math.max(min, Math.min(s.maxItems ?? 3, 3)) });
    }
    case 'object': {
      const props: Record<string, Schema> = s.properties ?? {};
      const required = new Set<string>(s.required ?? []);
      const record: Record<string, fc.Arbitrary<unknown>> = {};
      for (const [k, v] of Object.entries(props)) record[k] = validValue(v, root, { ...ctx, name: k });
      return fc.record(record, { requiredKeys: [...required].filter((k) => k in props) });
    }
    case 'string':
    default:
      return validString(s, ctx);
  }
}

function validString(s: Schema, ctx: { ids: Record<string, string[]>; name?: string }): fc.Arbitrary<string> {
  const known = ctx.name ? ctx.ids[ctx.name] : undefined;
  switch (s.format) {
    case 'uuid':
      return known && known.length > 0 ? fc.oneof(fc.constantFrom(...known), fc.uuid()) : fc.uuid();
    case 'date-time':
      return fc.date({ min: new Date('1970-01-01T00:00:00Z'), max: new Date('2100-01-01T00:00:00Z'), noInvalidDate: true }).map((d) => d.toISOString());
    case 'date':
      return fc.date({ min: new Date('1970-01-01T00:00:00Z'), max: new Date('2100-01-01T00:00:00Z'), noInvalidDate: true }).map((d) => d.toISOString().slice(0, 10));
    case 'email':
      return fc.stringMatching(/^[a-z][a-z0-9]{2,12}@example\.com$/);
    case 'uri':
      return fc.constantFrom('http://127.0.0.1:9/hook', 'https://93.184.215.14/x');
  }
  if (known && known.length > 0) return fc.constantFrom(...known);
  const min = s.minLength ?? 0;
  const max = Math.min(s.maxLength ?? 40, 40);
  if (s.pattern) {
    const re = new RegExp(s.pattern);
    const fits = SAMPLE_PATTERN_CANDIDATES.filter((c) => re.test(c) && c.length >= min && c.length <= (s.maxLength ?? Infinity));
    const generated = fc.string({ minLength: Math.max(min, 1), maxLength: Math.max(max, min, 1) }).filter((x) => re.test(x));
    return fits.length > 0 ? fc.oneof(fc.constantFrom(...fits), generated) : generated;
  }
  if (ctx.name === 'url') return fc.constantFrom('http://127.0.0.1:9/hook', 'http://localhost:9/x');
  return fc.string({ minLength: min, maxLength: Math.max(max, min), unit: 'grapheme' });
}
