import { createCipheriv, createDecipheriv, createHash, randomBytes } from 'node:crypto';
import type { FastifyRequest } from 'fastify';

/** How an Idempotency-Key request is identified (scope, request hash) and how its stored body is sealed. */

function sha256(text: string): string {
  return createHash('sha256').update(text).digest('hex');
}

/** JSON with object keys sorted, so `{"a":1,"b":2}` and `{"b":2,"a":1}` are the same payload. */
function canonicalJson(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(',')}]`;
  if (value && typeof value === 'object') {
    const entries = Object.keys(value as object)
      .sort()
      .map((k) => `${JSON.stringify(k)}:${canonicalJson((value as Record<string, unknown>)[k])}`);
    return `{${entries.join(',')}}`;
  }
  return JSON.stringify(value) ?? 'null';
}

/**
 * Tenant + caller + key: a key is only ever visible to the caller (user, API key, or IP) that sent it.
 * The stored body is encrypted with a key derived from the same inputs (never stored), because responses
 * can hold secrets shown once (a new API key, a session token): the table alone cannot reveal them.
 */
export function scopeOf(request: FastifyRequest, key: string): { scopeHash: string; tenantId: string | null; bodyKey: Buffer } {
  const p = request.principal;
  const tenantId = request.access?.orgId ?? p?.apiKeyOrgId ?? null;
  const caller = p ? (p.apiKeyId ? `key:${p.apiKeyId}` : `user:${p.userId}`) : `ip:${request.ip}`;
  const scope = `${tenantId ?? '-'}\n${caller}\n${key}`;
  return { scopeHash: sha256(scope), tenantId, bodyKey: createHash('sha256').update(`response-body\n${scope}`).digest() };
}

export function seal(bodyKey: Buffer, text: string): string {
  const iv = randomBytes(12);
  const cipher = createCipheriv('aes-256-gcm', bodyKey, iv);
  const data = Buffer.concat([cipher.update(text, 'utf8'), cipher.final()]);
  return Buffer.concat([iv, cipher.getAuthTag(), data]).toString('base64');
}

export function open(bodyKey: Buffer, sealed: string): string {
  const raw = Buffer.from(sealed, 'base64');
  const decipher = createDecipheriv('aes-256-gcm', bodyKey, raw.subarray(0, 12));
  decipher.setAuthTag(raw.subarray(12, 28));
  return Buffer.concat([decipher.update(raw.subarray(28)), decipher.final()]).toString('utf8');
}

export function requestHash(request: FastifyRequest): string {
  return sha256(`${request.method}\n${request.url}\n${canonicalJson(request.body ?? null)}`);
}
