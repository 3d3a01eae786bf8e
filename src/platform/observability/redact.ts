/**
 * Field names whose values never reach a log line, at any depth up to MAX_DEPTH: passwords, tokens,
 * secrets, API keys, credentials, Authorization/Cookie headers. Matching by name (not by fixed path)
 * because a secret can sit anywhere: a request body, a nested settings object, an upstream error's
 * response headers.
 */
export const SECRET_KEY = /passw|passphrase|secret|token|api[-_]?key|authori[sz]ation|cookie|credential|private[-_]?key|signature/i;
export const CENSOR = '[redacted]';
const MAX_DEPTH = 8;

function isWalkable(value: object): boolean {
  const proto = Object.getPrototypeOf(value);
  return proto === Object.prototype || proto === null || value instanceof Error;
}

/**
 * A copy of value with secret-named fields replaced by CENSOR; value itself when nothing needed
 * censoring (the common case allocates nothing). Only plain objects, arrays and errors are walked;
 * the caller's objects are never mutated. Errors stay errors (same prototype, message and stack).
 */
export function redactSecrets<T>(value: T, depth = 0): T {
  if (value === null || typeof value !== 'object' || depth > MAX_DEPTH) return value;
  if (Array.isArray(value)) {
    let out: unknown[] | undefined;
    for (let i = 0; i < value.length; i++) {
      const r = redactSecrets(value[i], depth + 1);
      if (r !== value[i]) (out ??= value.slice())[i] = r;
    }
    return (out ?? value) as T;
  }
  if (!isWalkable(value)) return value;
  let out: Record<string, unknown> | undefined;
  const source = value as Record<string, unknown>;
  for (const key of Object.keys(source)) {
    const v = source[key];
    const r = v !== undefined && v !== null && SECRET_KEY.test(key) ? CENSOR : redactSecrets(v, depth + 1);
    if (r !== v) {
      out ??= copyOf(source);
      out[key] = r;
    }
  }
  return (out ?? value) as T;
}

function copyOf(source: Record<string, unknown>): Record<string, unknown> {
  if (source instanceof Error) {
    const copy = Object.create(Object.getPrototypeOf(source));
    Object.defineProperties(copy, Object.getOwnPropertyDescriptors(source));
    return copy;
  }
  return { ...source };
}
