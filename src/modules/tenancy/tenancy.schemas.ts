import { Type } from '@sinclair/typebox';
import { pageQuery } from '../../platform/http/pagination.ts';
import { DateTime, Uuid } from '../../platform/http/schemas.ts';
import { ALL_PERMISSIONS, ROLES } from './tenancy.roles.ts';

export const bearer = [{ bearer: [] }];
export const RoleSchema = Type.Union(ROLES.map((r) => Type.Literal(r)), { description: 'owner | admin | member | viewer | billing' });
export const OrgName = Type.String({ minLength: 1, maxLength: 100, pattern: '\\S' });
export const OrgParams = Type.Object({ orgId: Uuid() });
export const ListQuery = Type.Object(pageQuery, { additionalProperties: false });
const NullableDateTime = Type.Union([DateTime(), Type.Null()]);

export const OrganizationSchema = Type.Object({ id: Uuid(), name: Type.String(), createdAt: DateTime() }, { additionalProperties: false });

export const MembershipSchema = Type.Object(
  { orgId: Uuid(), orgName: Type.String(), role: Type.String(), joinedAt: DateTime() },
  { additionalProperties: false },
);

export const MemberSchema = Type.Object(
  { userId: Uuid(), email: Type.String(), name: Type.String(), role: Type.String(), joinedAt: DateTime() },
  { additionalProperties: false },
);

export const InvitationSchema = Type.Object(
  {
    id: Uuid(),
    email: Type.String(),
    role: Type.String(),
    status: Type.Union([Type.Literal('pending'), Type.Literal('accepted'), Type.Literal('revoked'), Type.Literal('expired')]),
    expiresAt: DateTime(),
    createdAt: DateTime(),
  },
  { additionalProperties: false },
);

export const ApiKeySchema = Type.Object(
  {
    id: Uuid(),
    name: Type.String(),
    prefix: Type.String({ description: 'The first characters of the key, to recognise it' }),
    scopes: Type.Array(Type.String()),
    createdBy: Uuid(),
    expiresAt: NullableDateTime,
    lastUsedAt: NullableDateTime,
    revokedAt: NullableDateTime,
    createdAt: DateTime(),
  },
  { additionalProperties: false },
);

export const ScopeSchema = Type.String({ maxLength: 50, description: `One of: ${ALL_PERMISSIONS.join(', ')}` });
