import { scimError } from './directory.errors.ts';
import type { ScimGroupRow, ScimUserAttrs, ScimUserRow } from './directory.repo.ts';

/** RFC 7643/7644 schema URNs. */
export const SCIM = {
  user: 'urn:ietf:params:scim:schemas:core:2.0:User',
  group: 'urn:ietf:params:scim:schemas:core:2.0:Group',
  list: 'urn:ietf:params:scim:api:messages:2.0:ListResponse',
  patch: 'urn:ietf:params:scim:api:messages:2.0:PatchOp',
  error: 'urn:ietf:params:scim:api:messages:2.0:Error',
} as const;

export const SCIM_CONTENT_TYPE = 'application/scim+json; charset=utf-8';
export const MAX_PAGE = 200;

// ── filters (RFC 7644 §3.4.2.2): one `attr eq "value"`, on a whitelisted attribute ──

/** Parses `userName eq "alice@example.com"`; anything else is 400 invalidFilter. Attribute names are case-insensitive. */
export function parseEqFilter<A extends string>(filter: string | undefined, allowed: readonly A[]): { attr?: A; value?: string } {
  if (filter === undefined || filter.trim() === '') return {};
  const m = /^\s*([A-Za-z][\w.:-]*)\s+eq\s+"((?:[^"\\]|\\.)*)"\s*$/i.exec(filter);
  const attr = m && allowed.find((a) => a.toLowerCase() === stripSchema(m[1]!).toLowerCase());
  if (!m || !attr) throw scimError(400, 'invalidFilter', `Supported filters: ${allowed.map((a) => `${a} eq "…"`).join(', ')}`);
  return { attr, value: m[2]!.replace(/\\(.)/g, '$1') };
}

function stripSchema(path: string): string {
  for (const urn of [SCIM.user, SCIM.group]) if (path.toLowerCase().startsWith(`${urn.toLowerCase()}:`)) return path.slice(urn.length + 1);
  return path;
}

// ── resources in (create / replace) ──

type Json = Record<string, unknown>;
const str = (v: unknown, field: string, max = 256): string | null => {
  if (v === undefined || v === null) return null;
  if (typeof v !== 'string' || v.length > max) throw scimError(400, 'invalidValue', `${field} must be a string of at most ${max} characters`);
  return v;
};
const bool = (v: unknown, field: string): boolean => {
  // Some IdPs (Azure AD) send "True"/"False" strings.
  if (typeof v === 'boolean') return v;
  if (typeof v === 'string' && /^(true|false)$/i.test(v)) return v.toLowerCase() === 'true';
  throw scimError(400, 'invalidValue', `${field} must be a boolean`);
};
const EMAIL = /^[^\s@]{1,64}@[^\s@]{1,255}$/;

function primaryEmail(emails: unknown): string | null {
  if (emails === undefined || emails === null) return null;
  if (!Array.isArray(emails) || emails.length > 20) throw scimError(400, 'invalidValue', 'emails must be an array of at most 20 entries');
  const entries = emails as Json[];
  const chosen = entries.find((e) => e?.primary === true) ?? entries[0];
  return chosen ? str(chosen.value, 'emails.value', 320) : null;
}

/** The user's login e-mail: the primary email, else userName when it is one. */
function resolveEmail(a: Omit<ScimUserAttrs, 'email'> & { email: string | null }): string {
  const email = (a.email ?? (EMAIL.test(a.userName) ? a.userName : null))?.trim();
  if (!email || !EMAIL.test(email)) throw scimError(400, 'invalidValue', 'The user needs an e-mail address (emails[primary] or an e-mail userName)');
  return email;
}

/** A full User resource (POST, PUT) → the attributes Plinth keeps; unknown attributes and extensions are ignored. */
export function userAttrsFrom(body: Json): ScimUserAttrs {
  const userName = str(body.userName, 'userName');
  if (!userName || userName.trim() === '') throw scimError(400, 'invalidValue', 'userName is required');
  const name = (body.name ?? {}) as Json;
  if (typeof name !== 'object') throw scimError(400, 'invalidValue', 'name must be an object');
  const a = {
    userName: userName.trim(),
    externalId: str(body.externalId, 'externalId'),
    displayName: str(body.displayName, 'displayName'),
    givenName: str(name.givenName, 'name.givenName'),
    familyName: str(name.familyName, 'name.familyName'),
    email: primaryEmail(body.emails),
    active: body.active === undefined ? true : bool(body.active, 'active'),
  };
  return { ...a, email: resolveEmail(a) };
}

// ── PATCH (RFC 7644 §3.5.2) ──

export interface PatchOp {
  op: string;
  path?: string;
  value?: unknown;
}

/** Validates the PatchOp envelope; returns the operations with `op` lower-cased (IdPs send "Replace"). */
export function patchOps(body: Json): Array<PatchOp & { op: 'add' | 'replace' | 'remove' }> {
  if (!Array.isArray(body.schemas) || !body.schemas.includes(SCIM.patch)) throw scimError(400, 'invalidSyntax', `schemas must contain ${SCIM.patch}`);
  const ops = body.Operations;
  if (!Array.isArray(ops) || ops.length === 0 || ops.length > 100) throw scimError(400, 'invalidSyntax', 'Operations must be an array of 1 to 100 operations');
  return ops.map((o: Json) => {
    const op = typeof o?.op === 'string' ? o.op.toLowerCase() : '';
    if (op !== 'add' && op !== 'replace' && op !== 'remove') throw scimError(400, 'invalidSyntax', 'op must be add, replace or remove');
    if (o.path !== undefined && (typeof o.path !== 'string' || o.path.length > 300)) throw scimError(400, 'invalidPath', 'path must be a string');
    return { op, path: o.path as string | undefined, value: o.value };
  });
}

const EXTENSION = /^urn:ietf:params:scim:schemas:extension:/i;

/** Applies PATCH operations to a user's attributes (all or nothing: the caller saves only the result). */
export function patchUser(current: ScimUserAttrs, ops: PatchOp[]): ScimUserAttrs {
  const next: ScimUserAttrs = { ...current };
  const set = (path: string, value: unknown, remove: boolean) => {
    const p = stripSchema(path).toLowerCase();
    if (EXTENSION.test(path)) return; // enterprise extension attributes: accepted, not stored
    const removable = (field: 'externalId' | 'displayName' | 'givenName' | 'familyName', label: string) => {
      next[field] = remove ? null : str(value, label);
    };
    switch (p) {
      case 'active':
        if (remove) throw scimError(400, 'mutability', 'active cannot be removed');
        next.active = bool(value, 'active');
        return;
      case 'username': {
        const v = remove ? null : str(value, 'userName');
        if (!v || v.trim() === '') throw scimError(400, 'mutability', 'userName is required');
        next.userName = v.trim();
        return;
      }
      case 'externalid':
        return removable('externalId', 'externalId');
      case 'displayname':
        return removable('displayName', 'displayName');
      case 'name.givenname':
        return removable('givenName', 'name.givenName');
      case 'name.familyname':
        return removable('familyName', 'name.familyName');
      case 'name': {
        if (remove) return void ((next.givenName = null), (next.familyName = null));
        if (typeof value !== 'object' || value === null) throw scimError(400, 'invalidValue', 'name must be an object');
        const n = value as Json;
        if ('givenName' in n) next.givenName = str(n.givenName, 'name.givenName');
        if ('familyName' in n) next.familyName = str(n.familyName, 'name.familyName');
        return;
      }
      case 'emails': {
        if (remove) throw scimError(400, 'mutability', 'The user needs an e-mail address');
        const e = primaryEmail(value);
        if (!e) throw scimError(400, 'invalidValue', 'emails must contain an address');
        next.email = e;
        return;
      }
      default:
        // emails[type eq "work"].value, emails[primary eq true].value: the one address Plinth keeps
        if (/^emails\[[^\]]{1,100}\]\.value$/.test(p)) {
          if (remove) throw scimError(400, 'mutability', 'The user needs an e-mail address');
          next.email = str(value, 'emails.value', 320) ?? current.email;
          return;
        }
        throw scimError(400, 'invalidPath', `Unsupported path: ${path.slice(0, 100)}`);
    }
  };
  for (const o of ops) {
    if (o.path !== undefined) {
      set(o.path, o.value, o.op === 'remove');
      continue;
    }
    if (o.op === 'remove') throw scimError(400, 'noTarget', 'remove needs a path');
    if (typeof o.value !== 'object' || o.value === null || Array.isArray(o.value)) throw scimError(400, 'invalidValue', 'An operation without a path needs an object value');
    for (const [k, v] of Object.entries(o.value as Json)) set(k, v, false);
  }
  return { ...next, email: resolveEmail(next) };
}

export interface GroupAttrs {
  displayName: string;
  externalId: string | null;
  memberIds: string[];
}

const memberIdsFrom = (value: unknown): string[] => {
  if (!Array.isArray(value) || value.length > 1000) throw scimError(400, 'invalidValue', 'members must be an array of at most 1000 {"value": id} entries');
  return value.map((m: Json) => {
    if (typeof m?.value !== 'string' || m.value.length > 64) throw scimError(400, 'invalidValue', 'members[].value must be a user id');
    return m.value;
  });
};

/** A full Group resource (POST, PUT) → displayName, externalId, member ids. */
export function groupAttrsFrom(body: Json): GroupAttrs {
  const displayName = str(body.displayName, 'displayName');
  if (!displayName || displayName.trim() === '') throw scimError(400, 'invalidValue', 'displayName is required');
  return { displayName: displayName.trim(), externalId: str(body.externalId, 'externalId'), memberIds: body.members === undefined ? [] : memberIdsFrom(body.members) };
}

/** Applies PATCH operations to a group: members add/remove (by value filter or value list)/replace, displayName, externalId. */
export function patchGroup(current: GroupAttrs, ops: PatchOp[]): GroupAttrs {
  const next = { ...current, members: new Set(current.memberIds) };
  const apply = (op: 'add' | 'replace' | 'remove', path: string, value: unknown) => {
    const p = stripSchema(path);
    const filtered = /^members\[\s*value\s+eq\s+"([^"]{1,64})"\s*\]$/i.exec(p);
    if (filtered) {
      if (op !== 'remove') throw scimError(400, 'invalidPath', 'A filtered members path supports remove only');
      next.members.delete(filtered[1]!);
      return;
    }
    switch (p.toLowerCase()) {
      case 'members':
        if (op === 'add') for (const id of memberIdsFrom(value)) next.members.add(id);
        else if (op === 'replace') next.members = new Set(memberIdsFrom(value));
        else if (value === undefined) next.members.clear();
        else for (const id of memberIdsFrom(value)) next.members.delete(id);
        return;
      case 'displayname': {
        const v = op === 'remove' ? null : str(value, 'displayName');
        if (!v || v.trim() === '') throw scimError(400, 'mutability', 'displayName is required');
        next.displayName = v.trim();
        return;
      }
      case 'externalid':
        next.externalId = op === 'remove' ? null : str(value, 'externalId');
        return;
      default:
        throw scimError(400, 'invalidPath', `Unsupported path: ${path.slice(0, 100)}`);
    }
  };
  for (const o of ops) {
    if (o.path !== undefined) {
      apply(o.op as 'add' | 'replace' | 'remove', o.path, o.value);
      continue;
    }
    if (o.op === 'remove') throw scimError(400, 'noTarget', 'remove needs a path');
    if (typeof o.value !== 'object' || o.value === null || Array.isArray(o.value)) throw scimError(400, 'invalidValue', 'An operation without a path needs an object value');
    for (const [k, v] of Object.entries(o.value as Json)) apply(o.op as 'add' | 'replace', k, v);
  }
  return { displayName: next.displayName, externalId: next.externalId, memberIds: [...next.members] };
}

// ── resources out ──

const version = (v: number) => `W/"${v}"`;

export function renderUser(u: ScimUserRow, base: string) {
  const formatted = [u.givenName, u.familyName].filter(Boolean).join(' ');
  return {
    schemas: [SCIM.user],
    id: u.id,
    ...(u.externalId !== null ? { externalId: u.externalId } : {}),
    userName: u.userName,
    name: { ...(u.givenName !== null ? { givenName: u.givenName } : {}), ...(u.familyName !== null ? { familyName: u.familyName } : {}), ...(formatted ? { formatted } : {}) },
    ...(u.displayName !== null ? { displayName: u.displayName } : {}),
    emails: [{ value: u.email, type: 'work', primary: true }],
    active: u.active,
    groups: u.groups.map((g) => ({ value: g.id, display: g.displayName})),
    meta: { resourceType: 'User', created: u.createdAt.toISOString(), lastModified: u.updatedAt.toISOString(), location: `${base}/Users/${u.id}`, version: version(u.version) },
  };
}

export function renderGroup(g: ScimGroupRow, base: string) {
  return {
    schemas: [SCIM.group],
    id: g.id,
    ...(g.externalId !== null ? { externalId: g.externalId } : {}),
    displayName: g.displayName,
    members: g.members.map((m) => ({ value: m.id, display: m.userName})),
    meta: { resourceType: 'Group', created: g.createdAt.toISOString(), lastModified: g.updatedAt.toISOString(), location: `${base}/Groups/${g.id}`, version: version(g.version) },
  };
}

export function listResponse<T>(resources: T[], total: number, startIndex: number) {
  return { schemas: [SCIM.list], totalResults: total, startIndex, itemsPerPage: resources.length, Resources: resources };
}
